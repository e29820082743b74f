//! Seed examples "Host-side access" and "Manage volumes".

use msb::Volume;

#[tokio::main]
async fn main() -> Result<(), msb::Error> {
    for name in ["pip-cache", "old-cache"] {
        if Volume::get(name).await.is_err() {
            Volume::builder(name).create().await?;
        }
    }
    // --- seed snippets (only the `use` line differs) ---
    let vol = Volume::get("pip-cache").await?;
    vol.fs()
        .write("/requirements.txt", "requests==2.28.0")
        .await?;
    let volumes = Volume::list().await?;
    Volume::remove("old-cache").await?;
    // --- end of seed snippets ---
    println!(
        "requirements: {}",
        vol.fs().read_string("/requirements.txt").await?
    );
    let names: Vec<&str> = volumes.iter().map(|v| v.name()).collect();
    println!("volumes before remove: {}", names.join(","));
    match vol.fs().write("/../escape.txt", "x").await {
        Err(msb::Error::PathEscape { .. }) => println!("escape refused"),
        other => println!("escape NOT refused: {other:?}"),
    }
    Ok(())
}
