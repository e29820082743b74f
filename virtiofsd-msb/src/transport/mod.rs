//! Transports carrying FUSE requests to the filesystem.
