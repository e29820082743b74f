//! Seed example "Tmpfs": in-memory scratch space with a size limit.

use msb::Sandbox;

#[tokio::main]
async fn main() -> Result<(), msb::Error> {
    // --- seed snippet (only the `use` line differs) ---
    let sb = Sandbox::builder("worker")
        .image("alpine:latest")
        .volume("/tmp/scratch", |v| v.tmpfs().size(100))
        .create()
        .await?;
    // --- end of seed snippet ---
    let df = sb.shell("df -m /tmp/scratch | tail -1").await?;
    print!("{}", df.stdout());
    let full = sb
        .shell("dd if=/dev/zero of=/tmp/scratch/big bs=1M count=200 2>/dev/null; echo $?")
        .await?;
    print!("dd past the limit: {}", full.stdout());
    sb.remove().await?;
    Ok(())
}
