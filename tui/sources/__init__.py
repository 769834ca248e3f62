"""Kernel-facing data sources for the TUI, each read from outside the server's process.

tcp_states     TCP sockets on a port via netlink sock_diag (what `ss -tn` shows)
threads        per-thread state, CPU and context switches from /proc/PID/task
epoll_fdinfo   an epoll instance's interest set from /proc/PID/fdinfo
packet_capture SYN/FIN/RST segments via scapy in a child process (needs root)

No Textual here: each module returns plain frozen dataclasses, so labs and tests use them too.
"""
