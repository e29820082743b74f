//! Seed example "Share between sandboxes": a writer and a read-only reader
//! up at the same time on one named volume.

use msb::{Sandbox, Volume};

#[tokio::main]
async fn main() -> Result<(), msb::Error> {
    // The seed mounts "shared-data" without creating it: make it first.
    if Volume::get("shared-data").await.is_err() {
        Volume::builder("shared-data").create().await?;
    }
    // --- seed snippet (only the `use` line differs) ---
    // Writer
    let writer = Sandbox::builder("writer")
        .image("alpine:latest")
        .volume("/data", |v| v.named("shared-data"))
        .create()
        .await?;
    writer.shell("echo 'hello' > /data/message.txt").await?;
    // Reader (read-only)
    let reader = Sandbox::builder("reader")
        .image("alpine:latest")
        .volume("/data", |v| v.named("shared-data").readonly())
        .create()
        .await?;
    let output = reader.exec("cat", ["/data/message.txt"]).await?;
    // => "hello"
    // --- end of seed snippet ---
    print!("reader read: {}", output.stdout());
    let denied = reader.shell("echo nope > /data/message.txt").await?;
    println!("reader write exit {}", denied.exit_code());
    writer.remove().await?;
    reader.remove().await?;
    Ok(())
}
