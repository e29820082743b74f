//! What `msb volume` prints: tables and `key: value` blocks for people,
//! JSON (`--json`) for programs.

use std::fmt::Write as _;

use volumes::{rfc3339, Entry, EntryKind, VolumeHandle};

/// `1536` → `1.5 KiB`; bytes below 1 KiB stay exact.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v >= 100.0 || v.fract() < 0.05 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Live leases as the IN USE column shows them.
fn in_use(h: &VolumeHandle) -> String {
    match h.in_use_by.iter().filter(|l| l.live).count() {
        0 => "-".to_string(),
        1 => "1 VM".to_string(),
        n => format!("{n} VMs"),
    }
}

/// Lays out rows under a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let n = cells.len();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == n {
                out.push_str(c);
            } else {
                let _ = write!(out, "{c:<w$}  ");
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// The `msb volume ls` table.
pub fn volume_table(list: &[VolumeHandle]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                h.kind.to_string(),
                h.quota_mib
                    .map(|q| human_bytes(u64::from(q) << 20))
                    .unwrap_or_else(|| "-".into()),
                human_bytes(h.used_bytes),
                h.capacity_bytes
                    .map(human_bytes)
                    .unwrap_or_else(|| "-".into()),
                rfc3339(h.created_at),
                in_use(h),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "KIND", "QUOTA", "USED", "CAPACITY", "CREATED", "IN USE",
        ],
        &rows,
    )
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The `msb volume inspect` block: every field of the handle.
pub fn inspect(h: &VolumeHandle) -> String {
    let labels = if h.labels.is_empty() {
        "-".to_string()
    } else {
        h.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    let mut field = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<15} {v}");
    };
    field("name:", h.name.clone());
    field("path:", h.path.display().to_string());
    field("kind:", h.kind.to_string());
    field("quota_mib:", or_dash(h.quota_mib));
    field(
        "used_bytes:",
        format!("{} ({})", h.used_bytes, human_bytes(h.used_bytes)),
    );
    field(
        "capacity_bytes:",
        or_dash(
            h.capacity_bytes
                .map(|c| format!("{c} ({})", human_bytes(c))),
        ),
    );
    field("disk_format:", or_dash(h.disk_format.as_deref()));
    field("disk_fstype:", or_dash(h.disk_fstype.as_deref()));
    field("labels:", labels);
    field("created_at:", rfc3339(h.created_at));
    if h.in_use_by.is_empty() {
        field("in_use_by:", "-".into());
    }
    for (i, l) in h.in_use_by.iter().enumerate() {
        let key = if i == 0 { "in_use_by:" } else { "" };
        field(key, format!("{l}, since {}", rfc3339(l.acquired_at)));
    }
    out
}

/// The `msb volume fs NAME ls` table.
pub fn entries(list: &[Entry]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            let kind = match e.kind {
                EntryKind::File => "file",
                EntryKind::Dir => "dir",
                EntryKind::Symlink => "symlink",
                EntryKind::Other => "other",
            };
            vec![kind.to_string(), e.size.to_string(), e.name.clone()]
        })
        .collect();
    table(&["TYPE", "SIZE", "NAME"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(3 << 30), "3 GiB");
    }

    #[test]
    fn tables_pad_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["wide-cell".into(), "x".into()],
                vec!["b".into(), "y".into()],
            ],
        );
        assert_eq!(t, "A          LONGER\nwide-cell  x\nb          y\n");
    }
}
