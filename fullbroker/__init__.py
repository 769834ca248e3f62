"""The full broker: mosquitto.conf, password and ACL files, the sqlite store, bridges.

Everything here does I/O, so it lives outside mqtt/.
"""
