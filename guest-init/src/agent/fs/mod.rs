//! Fs sessions: file operations inside the guest, one thread each.
//!
//! A session ends with [`Kind::FsDone`] or with one [`Kind::Error`] frame
//! naming the operation, the guest path and the errno.

mod archive;

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use super::input::{self, InputReader};
use super::sink::DataWriter;
use super::Shared;
use crate::protocol::{FileKind, FileStat, FsReply, FsRequest, Kind};

/// Starts fs session `id`.
pub fn start(shared: &Arc<Shared>, id: u32, req: FsRequest) {
    let takes_input = matches!(req, FsRequest::Write { .. } | FsRequest::CopyIn { .. });
    let (tx, reader) = if takes_input {
        let (tx, rx) = input::queue();
        (Some(tx), Some(InputReader::new(rx)))
    } else {
        (None, None)
    };
    if let Err(e) = shared.sessions.insert(id, None, tx) {
        shared.sink.error(id, e);
        return;
    }
    let worker = shared.clone();
    let body = move || {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| serve(&worker, id, req, reader)));
        worker.sessions.end(id);
        match outcome {
            Ok(Ok(reply)) => worker.sink.json(Kind::FsDone, id, &reply),
            Ok(Err(message)) => worker.sink.error(id, message),
            Err(_) => worker
                .sink
                .error(id, format!("session {id}: internal error in the agent")),
        };
    };
    if let Err(e) = shared.spawn_worker(format!("msb-fs-{id}"), body) {
        shared.sessions.end(id);
        shared.sink.error(
            id,
            format!("session {id}: the agent cannot start a thread: {e}"),
        );
    }
}

/// A failed operation: "`op` `path`: error".
fn failed(op: &str, path: &str, e: impl std::fmt::Display) -> String {
    format!("{op} {path}: {e}")
}

fn serve(
    shared: &Shared,
    id: u32,
    req: FsRequest,
    reader: Option<InputReader>,
) -> Result<FsReply, String> {
    let root = &shared.root;
    let (op, path) = match &req {
        FsRequest::Read { path } => ("read", path),
        FsRequest::Write { path, .. } => ("write", path),
        FsRequest::List { path } => ("list", path),
        FsRequest::Stat { path } => ("stat", path),
        FsRequest::Remove { path, .. } => ("remove", path),
        FsRequest::Mkdir { path, .. } => ("mkdir", path),
        FsRequest::CopyOut { path } => ("copy_out", path),
        FsRequest::CopyIn { dest } => ("copy_in", dest),
    };
    let abs = root
        .absolute(path, None)
        .map_err(|m| format!("{op}: {m}"))?;
    let fail = |e: io::Error| failed(op, &abs, e);
    let located = root.locate(&abs).map_err(fail)?;
    let at = &located.path;
    let mut reply = FsReply::default();
    match req {
        FsRequest::Read { .. } => {
            let mut file = fs::File::open(at).map_err(fail)?;
            let mut out = DataWriter::new(&shared.sink, id);
            io::copy(&mut file, &mut out)
                .and_then(|_| out.flush())
                .map_err(fail)?;
            reply.bytes = out.total;
        }
        FsRequest::Write { mode, .. } => {
            let mut input = reader.ok_or_else(|| failed(op, &abs, "no stdin"))?;
            let mut file = create_or_truncate(at, mode).map_err(fail)?;
            io::copy(&mut input, &mut file).map_err(fail)?;
            reply.bytes = input.total;
        }
        FsRequest::List { .. } => {
            for entry in fs::read_dir(at).map_err(fail)? {
                let entry = entry.map_err(fail)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // An entry removed meanwhile is simply not listed.
                if let Ok(meta) = fs::symlink_metadata(entry.path()) {
                    reply.entries.push(file_stat(name, &meta));
                }
            }
            reply.entries.sort_by(|a, b| a.name.cmp(&b.name));
        }
        FsRequest::Stat { .. } => {
            let meta = fs::symlink_metadata(at).map_err(fail)?;
            reply.stat = Some(file_stat(last_component(&abs).to_string(), &meta));
        }
        FsRequest::Remove { recursive, .. } => {
            if last_component(&abs) == "/" {
                return Err(failed(op, &abs, "refusing to remove the root"));
            }
            let meta = fs::symlink_metadata(at).map_err(fail)?;
            let removed = match (meta.is_dir(), recursive) {
                (true, true) => fs::remove_dir_all(at),
                (true, false) => fs::remove_dir(at),
                (false, _) => fs::remove_file(at),
            };
            removed.map_err(fail)?;
        }
        FsRequest::Mkdir { mode, .. } => mkdir_parents(shared, &abs, mode)?,
        FsRequest::CopyOut { .. } => {
            reply.bytes = archive::copy_out(shared, id, at, last_component(&abs)).map_err(fail)?
        }
        FsRequest::CopyIn { .. } => {
            let input = reader.ok_or_else(|| failed(op, &abs, "no stdin"))?;
            reply.bytes = archive::copy_in(at, input).map_err(|m| failed(op, &abs, m))?;
        }
    }
    Ok(reply)
}

/// Opens `at` for writing: a new file gets exactly `mode` (not masked by
/// the umask); an existing one is truncated and keeps its mode.
fn create_or_truncate(at: &std::path::Path, mode: u32) -> io::Result<fs::File> {
    let created = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o7777)
        .open(at);
    match created {
        Ok(f) => {
            f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
            Ok(f)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::OpenOptions::new().write(true).truncate(true).open(at)
        }
        Err(e) => Err(e),
    }
}

/// `mkdir -p`, one component at a time (each resolved inside the root);
/// created directories get `mode`, existing ones are left alone.
fn mkdir_parents(shared: &Shared, abs: &str, mode: u32) -> Result<(), String> {
    let mut prefix = String::new();
    for part in abs.split('/').filter(|c| !c.is_empty() && *c != ".") {
        prefix.push('/');
        prefix.push_str(part);
        let fail = |e: io::Error| failed("mkdir", &prefix, e);
        let located = shared.root.locate(&prefix).map_err(fail)?;
        match fs::DirBuilder::new()
            .mode(mode & 0o7777)
            .create(&located.path)
        {
            Ok(()) => fs::set_permissions(&located.path, fs::Permissions::from_mode(mode & 0o7777))
                .map_err(fail)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !fs::metadata(&located.path).map_err(fail)?.is_dir() {
                    return Err(failed("mkdir", &prefix, "exists and is not a directory"));
                }
            }
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(())
}

/// The last component of an absolute guest path ("/" for the root).
fn last_component(abs: &str) -> &str {
    abs.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("/")
}

fn file_stat(name: String, meta: &fs::Metadata) -> FileStat {
    let t = meta.file_type();
    let kind = if t.is_file() {
        FileKind::File
    } else if t.is_dir() {
        FileKind::Dir
    } else if t.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    };
    FileStat {
        name,
        kind,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
    }
}

#[cfg(test)]
mod tests {
    use super::last_component;

    #[test]
    fn last_components() {
        assert_eq!(last_component("/"), "/");
        assert_eq!(last_component("///"), "/");
        assert_eq!(last_component("/a/b"), "b");
        assert_eq!(last_component("/a/b/"), "b");
    }
}
