//! Exec sessions: a process per session, its stdio forwarded as frames.

pub mod command;
pub mod exec;
pub mod pump;
