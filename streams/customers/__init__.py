"""Customers who leave: which customers of which tenant get no mail at all.

The model is ``streams/domain/customers.py``; ``feed.py`` follows the customers topic into it.
"""
