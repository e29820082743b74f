//! What `msb image` prints: a table and `key: value` blocks for people,
//! JSON (`--json`) for programs.

use std::fmt::Write as _;

use images::Image;

use crate::volume::output::{human_bytes, table};

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn when(secs: u64) -> String {
    volumes::rfc3339(secs as i64)
}

/// The `msb image ls` table: one row per name (untagged: `<none>`).
pub fn image_table(list: &[Image]) -> String {
    let mut rows = Vec::new();
    for img in list {
        let names: Vec<String> = if img.names.is_empty() {
            vec!["<none>".to_string()]
        } else {
            img.names.clone()
        };
        for n in names {
            rows.push(vec![
                n,
                img.id.0.short().to_string(),
                img.platform.clone(),
                img.layers.len().to_string(),
                human_bytes(img.size),
                when(img.added_at),
            ]);
        }
    }
    table(
        &["NAME", "ID", "PLATFORM", "LAYERS", "SIZE", "ADDED"],
        &rows,
    )
}

/// `msb image inspect` without `--json`.
pub fn inspect(img: &Image) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "id: {}", img.id);
    let _ = writeln!(
        out,
        "names: {}",
        if img.names.is_empty() {
            "<none>".into()
        } else {
            img.names.join(", ")
        }
    );
    let _ = writeln!(out, "manifest: {}", img.manifest_digest);
    if let Some(d) = &img.index_digest {
        let _ = writeln!(out, "index: {d}");
    }
    let _ = writeln!(out, "platform: {}", img.platform);
    if let Some(c) = &img.created {
        let _ = writeln!(out, "created: {c}");
    }
    let _ = writeln!(out, "added: {}", when(img.added_at));
    let _ = writeln!(out, "size: {} ({} bytes)", human_bytes(img.size), img.size);
    let c = &img.config;
    let _ = writeln!(out, "entrypoint: {:?}", c.entrypoint);
    let _ = writeln!(out, "cmd: {:?}", c.cmd);
    let _ = writeln!(out, "env: {:?}", c.env);
    let _ = writeln!(out, "workdir: {}", c.working_dir.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "user: {}", c.user.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "layers:");
    for l in &img.layers {
        let _ = writeln!(
            out,
            "  {} {:>10}  diff {}",
            l.digest,
            human_bytes(l.size),
            l.diff_id
        );
    }
    out
}
