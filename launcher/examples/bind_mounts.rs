//! Seed example "Bind mounts": a host directory read-only and one read-write.
//! Run from a directory holding `src/` and `data/` (the test makes them).

use msb::Sandbox;

#[tokio::main]
async fn main() -> Result<(), msb::Error> {
    // --- seed snippet (only the `use` line differs) ---
    let sb = Sandbox::builder("dev")
        .image("python:3.12")
        .volume("/app/src", |v| v.bind("./src").readonly())
        .volume("/app/data", |v| v.bind("./data"))
        .create()
        .await?;
    // --- end of seed snippet ---
    let listing = sb
        .shell("ls /app/src && echo from-guest > /app/data/out.txt")
        .await?;
    print!("{}", listing.stdout());
    let denied = sb.shell("echo x > /app/src/new.txt").await?;
    println!("write to /app/src exit {}", denied.exit_code());
    sb.remove().await?;
    Ok(())
}
