//! The rest of the Rust SDK in one run (the tests check each printed line):
//! typed errors, `Sandbox::get/list`, exec with stdin, a pty and a timeout,
//! streaming exec, the in-sandbox filesystem API, stop/start.

use msb::{Error, ExecOptions, Sandbox, Volume};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Typed errors, nothing created.
    match Sandbox::get("no-such-box").await {
        Err(Error::NotFound(_)) => println!("get missing: not found"),
        other => println!("get missing: UNEXPECTED {other:?}"),
    }
    let bad = Sandbox::builder("tour")
        .volume("/m", |v| v.named("missing-volume"))
        .create()
        .await;
    match bad {
        Err(Error::InvalidMount(m)) if m.contains("missing-volume") => {
            println!("missing volume: invalid mount")
        }
        other => println!("missing volume: UNEXPECTED {other:?}"),
    }
    let vol = Volume::builder("tour-vol").quota(16).create().await?;
    match vol.fs().read("../../etc/passwd").await {
        Err(Error::PathEscape { .. }) => println!("volume escape: path escape"),
        other => println!("volume escape: UNEXPECTED {other:?}"),
    }

    let sb = Sandbox::builder("tour")
        .volume("/vol", |v| v.named(vol.name()))
        .env("GREETING", "hi")
        .workdir("/tmp")
        .cpus(1)
        .memory(256)
        .create()
        .await?;
    match Sandbox::builder("tour").create().await {
        Err(Error::AlreadyExists(_)) => println!("second create: already exists"),
        other => println!("second create: UNEXPECTED {other:?}"),
    }
    let again = Sandbox::get("tour").await?;
    let listed = Sandbox::list().await?;
    println!(
        "listed: {}",
        listed
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let env = again.shell("echo $GREETING from $(pwd)").await?;
    print!("env: {}", env.stdout());

    let piped = sb
        .exec_with(ExecOptions {
            argv: vec!["wc".into(), "-c".into()],
            stdin: Some(vec![b'x'; 100_000]),
            ..ExecOptions::default()
        })
        .await?;
    println!("stdin bytes: {}", piped.stdout().trim());
    let tty = sb
        .exec_with(ExecOptions {
            argv: vec!["stty".into(), "size".into()],
            tty: Some((30, 100)),
            ..ExecOptions::default()
        })
        .await?;
    println!("tty size: {}", tty.stdout().trim());
    let slow = sb
        .exec_with(ExecOptions {
            argv: vec!["sleep".into(), "30".into()],
            timeout_secs: Some(1),
            ..ExecOptions::default()
        })
        .await?;
    println!("timeout exit: {}", slow.exit_code());
    let missing = sb.exec("no-such-command", Vec::<String>::new()).await?;
    println!("missing command exit: {}", missing.exit_code());

    let mut stream = sb
        .exec_stream(ExecOptions {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "read a; echo got $a; echo err >&2; exit 7".into(),
            ],
            ..ExecOptions::default()
        })
        .await?;
    stream.write_stdin(b"streamed\n".to_vec()).await?;
    stream.close_stdin().await?;
    let (mut out, mut err, mut code) = (String::new(), String::new(), None);
    while let Some(ev) = stream.next().await {
        match ev? {
            msb::ExecEvent::Stdout(b) => out.push_str(&String::from_utf8_lossy(&b)),
            msb::ExecEvent::Stderr(b) => err.push_str(&String::from_utf8_lossy(&b)),
            msb::ExecEvent::Exited(e) => code = e.code,
        }
    }
    println!("stream: out {out:?} err {err:?} code {code:?}");

    let fs = sb.fs();
    fs.mkdir("/tmp/tour/sub").await?;
    fs.write("/tmp/tour/sub/a.txt", "alpha").await?;
    println!("fs read: {}", fs.read_string("/tmp/tour/sub/a.txt").await?);
    let names: Vec<String> = fs
        .list("/tmp/tour/sub")
        .await?
        .into_iter()
        .map(|e| e.name)
        .collect();
    println!("fs list: {}", names.join(","));
    println!(
        "fs stat size: {}",
        fs.stat("/tmp/tour/sub/a.txt").await?.size
    );
    fs.remove_all("/tmp/tour").await?;
    println!("fs exists after remove: {}", fs.exists("/tmp/tour").await?);
    match fs.read("/no/such/file").await {
        Err(Error::NotFound(_)) => println!("fs missing: not found"),
        other => println!("fs missing: UNEXPECTED {other:?}"),
    }
    // The guest's writes to the volume are on the host.
    sb.shell("echo from-guest > /vol/note").await?;
    println!(
        "volume note: {}",
        vol.fs().read_string("/note").await?.trim()
    );

    sb.stop().await?;
    println!("status after stop: {:?}", sb.status().await?);
    match sb.exec("true", Vec::<String>::new()).await {
        Err(Error::InvalidState(_)) => println!("exec when stopped: invalid state"),
        other => println!("exec when stopped: UNEXPECTED {other:?}"),
    }
    sb.start().await?;
    println!(
        "after start: {}",
        sb.shell("cat /vol/note").await?.stdout().trim()
    );
    sb.remove().await?;
    Volume::remove("tour-vol").await?;
    println!("done");
    Ok(())
}
