//! Process-level setup and the serve loop: logging, rlimits, signals, socket.
