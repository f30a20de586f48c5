"""Deployment material; ``deploy.local`` starts the real components on this machine."""
