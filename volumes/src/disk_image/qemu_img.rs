//! Formats not parsed here, as `qemu-img info --output=json` reports them:
//! the format, the backing file, a QCOW2 data file, VMDK extents.
//! `qemu-img info` opens neither backing files nor data files (checked
//! with FIFOs in their place: it returns at once), and it runs only on
//! images whose header is none of QCOW2 and VMDK, whose extents it would
//! open.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::probe::{External, ExternalKind};
use super::DiskFormat;

/// Environment variable naming the `qemu-img` binary (default: `PATH`).
pub const QEMU_IMG_ENV: &str = "MSB_QEMU_IMG";
/// How long `qemu-img info` may take.
const TIMEOUT: Duration = Duration::from_secs(20);
/// Most bytes of output read.
const MAX_OUTPUT: u64 = 1 << 20;

/// What `qemu-img info` said.
#[derive(Debug)]
pub(super) struct Found {
    pub(super) format: DiskFormat,
    pub(super) externals: Vec<External>,
}

fn qemu_img() -> PathBuf {
    std::env::var_os(QEMU_IMG_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("qemu-img"))
}

/// Runs `qemu-img info` on `image`; `None` when `qemu-img` is not
/// installed (the image is then taken as raw, with a warning).
pub(super) fn info(image: &Path) -> Result<Option<Found>, String> {
    let bin = qemu_img();
    let mut cmd = Command::new(&bin);
    cmd.args(["info", "--output=json", "-U"])
        .arg(image)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs between fork and exec and only calls prctl,
    // which is async-signal-safe and takes plain integers.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                "{} not found: disk image {} taken as raw (install qemu-utils to have its \
                 format detected)",
                bin.display(),
                image.display()
            );
            return Ok(None);
        }
        Err(e) => return Err(format!("cannot run {}: {e}", bin.display())),
    };
    let (ok, stdout, stderr) = wait(child, &bin)?;
    if !ok {
        return Err(format!(
            "qemu-img cannot read it: {}",
            String::from_utf8_lossy(&stderr).trim()
        ));
    }
    parse(&stdout).map(Some)
}

/// Waits for `child` up to [`TIMEOUT`] (then kills it); its success, stdout
/// and stderr.
fn wait(mut child: Child, bin: &Path) -> Result<(bool, Vec<u8>, Vec<u8>), String> {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(MAX_OUTPUT).read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                break Err(format!(
                    "{} info took longer than {TIMEOUT:?}",
                    bin.display()
                ))
            }
            Err(e) => break Err(format!("waiting for {}: {e}", bin.display())),
        }
    };
    if status.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    Ok((status?.success(), out, err))
}

/// Reads `qemu-img info --output=json` output.
pub(super) fn parse(json: &[u8]) -> Result<Found, String> {
    let v: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| format!("unreadable qemu-img info output: {e}"))?;
    let name = v["format"]
        .as_str()
        .ok_or("qemu-img info output has no format")?;
    let format = match name {
        "luks" => return Err("encrypted (LUKS) images are not supported".into()),
        other => other.parse::<DiskFormat>().map_err(|_| {
            format!(
                "qemu-img says it is a {other} image, which msb does not attach (use {})",
                DiskFormat::names()
            )
        })?,
    };
    let mut externals = Vec::new();
    if let Some(b) = v["backing-filename"].as_str() {
        externals.push(External::new(ExternalKind::Backing, b));
    }
    let data = &v["format-specific"]["data"];
    if let Some(d) = data["data-file"].as_str() {
        externals.push(External::new(ExternalKind::DataFile, d));
    }
    if let Some(list) = data["extents"].as_array() {
        for e in list {
            if let Some(f) = e["filename"].as_str() {
                externals.push(External::new(ExternalKind::Extent, f));
            }
        }
    }
    Ok(Found { format, externals })
}
