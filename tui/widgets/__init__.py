"""The TUI's views, one module each, plus the paged table they share.

Every view has ``refresh_from(model)``: the app calls it for the visible tab only, about ten
times a second, and the view redraws only what the model changed.
"""
