"""Customers who leave: which customers of which tenant get no mail at all (see ``model.py``)."""
