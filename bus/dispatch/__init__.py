"""Dispatch (DESIGN §1 stage 8): workers claim deliveries from the store and send them."""
