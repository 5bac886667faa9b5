"""The admin console: a Textual app that only shows and asks; every action is a service call."""
