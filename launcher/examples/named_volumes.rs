//! Seed examples "Create a volume" and "Mount in a sandbox".

use msb::{Sandbox, Volume};

#[tokio::main]
async fn main() -> Result<(), msb::Error> {
    // --- seed snippets (only the `use` line differs) ---
    let cache = Volume::builder("pip-cache").quota(1024).create().await?;
    let sb = Sandbox::builder("worker")
        .image("python:3.12")
        .volume("/root/.cache/pip", |v| v.named(cache.name()))
        .create()
        .await?;
    // --- end of seed snippets ---
    let out = sb
        .shell("echo cached > /root/.cache/pip/marker && df -m /root/.cache/pip | tail -1")
        .await?;
    print!("{}", out.stdout());
    sb.remove().await?;
    println!(
        "marker on the host: {}",
        cache.fs().read_string("marker").await?.trim()
    );
    Ok(())
}
