"""From inbound bytes to outbound mails: decode, apply the triggers, render."""
