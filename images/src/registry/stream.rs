//! A layer unpacked while it downloads: each chunk from the registry goes
//! into the blob's partial file (and its digest) and, through a bounded
//! channel, to an unpacker on a blocking thread. The channel ends only
//! after the blob was verified and committed; when the download fails or
//! the digest does not match, the unpacker reads an error instead of the
//! end, and its staging tree is deleted: nothing unverified is committed.
//! A download that resumes an earlier one is not streamed (the caller
//! unpacks from the stored blob).

use std::io::{self, Read};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Session;
use crate::digest::Digest;
use crate::error::Result;
use crate::paths::Paths;
use crate::progress::{Event, Progress};
use crate::spec::Descriptor;

/// Chunks in flight between the download and the unpacker.
const IN_FLIGHT: usize = 32;

/// The unpacker's side of the channel, as a reader.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

impl Session {
    /// Downloads layer `d` and unpacks it (as `diff_id`) at the same time.
    /// Returns `false`, having done nothing, when the download would
    /// resume an interrupted one or another process just stored the blob.
    pub async fn stream_layer(
        &self,
        paths: &Paths,
        d: &Descriptor,
        diff_id: &Digest,
        what: &str,
        progress: &Progress,
    ) -> Result<bool> {
        let mut partial = self.open_partial(paths, d).await?;
        if partial.done() || partial.offset() > 0 {
            return Ok(false);
        }
        let stream = self.open_stream(d).await?;
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let unpacker = {
            let (paths, layer, diff_id) = (paths.clone(), d.digest.clone(), diff_id.clone());
            tokio::task::spawn_blocking(move || {
                let mut reader = ChannelReader {
                    rx,
                    current: Bytes::new(),
                };
                crate::unpack::ensure_layer_from(&paths, &mut reader, &layer, &diff_id)
            })
        };
        let fed = self
            .feed(&mut partial, stream, d, what, progress, Some(&tx))
            .await;
        let stored = match fed {
            Ok(()) => self.commit(partial, d, what).await,
            Err(e) => Err(e),
        };
        if stored.is_err() {
            // The unpacker gets an error where the end would be.
            let _ = tx.send(Err(io::Error::other("the download failed"))).await;
        } else {
            progress(&Event::Unpacking {
                digest: d.digest.clone(),
            });
        }
        drop(tx);
        let unpacked = unpacker
            .await
            .map_err(|e| self.fail(format!("unpack task: {e}")))?;
        // The download's error explains the unpacker's.
        stored?;
        unpacked?;
        Ok(true)
    }
}
