"""Kernel-facing data sources for the TUI, each read from outside the server's process.

tcp_states     TCP sockets on a port via netlink sock_diag (what `ss -tn` shows)
tcp_sampler    repeated dumps of one port: only the messages that changed are decoded again
tcp_activity   the kernel's TCP counters (/proc/net/snmp): whether anything moved, so whether to dump
server_process is the server alive, is something listening, which pid holds the port
threads        per-thread state, syscall, CPU and context switches from /proc/PID/task
epoll_fdinfo   an epoll instance's interest set from /proc/PID/fdinfo
packet_capture SYN/FIN/RST segments and kernel drop counts, captured in a child process (needs root)

No Textual here: each module returns plain frozen dataclasses, so labs and tests use them too.
"""
