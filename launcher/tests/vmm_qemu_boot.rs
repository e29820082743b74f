//! Real QEMU boots of the exact argv from `msb::vmm::qemu` (TCG, or
//! KVM where the probe says it works): the test guest mounts a share served
//! by a real `virtiofsd-msb`, sees a read-only disk by its serial, and
//! writes to the two named virtio-serial ports; a guest panic and a guest
//! reboot end QEMU as documented. Skipped (with the reason printed) when
//! QEMU or the guest kernel is missing.

mod vmm_boot;

use std::path::Path;
use std::time::{Duration, Instant};

use msb::vmm::qemu::qemu_exit;
use msb::vmm::{detect, spawn, Accel, Disk, DiskFormat, FsShare, VmPlan, VmmExit, VmmKind};
use vmm_boot::{
    guest, initramfs_with, plan, share_and_disk, skip, test_script, Capture, CpioFile, Guest,
};

/// Generous bound for one TCG boot on a loaded 2-core machine.
const BOOT_LIMIT: Duration = Duration::from_secs(180);

fn prerequisites(test: &str) -> Option<Guest> {
    if detect::find_in_path("qemu-system-x86_64").is_none()
        && std::env::var_os(detect::QEMU_ENV).is_none()
    {
        skip(
            test,
            "qemu-system-x86_64 not found on PATH (Debian package qemu-system-x86)",
        );
        return None;
    }
    match guest() {
        Ok(g) => Some(g),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

fn accel(g: &Guest) -> Accel {
    if detect::kvm_usable(&g.kernel) {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

struct Run {
    exit: VmmExit,
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    console: String,
    took: Duration,
}

/// Boots `plan` under QEMU with the launcher's `spawn`, capturing both FIFOs.
fn boot(plan: &VmPlan) -> Run {
    let out = Capture::start(&plan.stdout_fifo).expect("stdout fifo");
    let err = Capture::start(&plan.stderr_fifo).expect("stderr fifo");
    let start = Instant::now();
    let mut vm = spawn(VmmKind::Qemu, plan).expect("start qemu");
    assert!(vm.events.is_none());
    let status = vm.child.wait_for(BOOT_LIMIT);
    let took = start.elapsed();
    let console =
        String::from_utf8_lossy(&std::fs::read(&plan.console_log).unwrap_or_default()).into_owned();
    let log = std::fs::read_to_string(plan.run_dir.join(msb::vmm::VMM_LOG)).unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!("QEMU did not end within {BOOT_LIMIT:?}; console:\n{console}\nlog:\n{log}")
    });
    Run {
        exit: qemu_exit(status, &console),
        code: status.code(),
        stdout: out.finish(),
        stderr: err.finish(),
        console,
        took,
    }
}

#[test]
fn qemu_boots_with_a_share_a_readonly_disk_and_both_ports() {
    let test = "qemu_boots_with_a_share_a_readonly_disk_and_both_ports";
    let Some(g) = prerequisites(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (daemon, disk) = match share_and_disk(dir.path()) {
        Ok(found) => found,
        Err(why) => return skip(test, &why),
    };
    let script = r#"
port() { for p in /sys/class/virtio-ports/*; do [ "$(cat "$p/name")" = "$1" ] && echo "/dev/${p##*/}"; done; }
out=$(port msb.stdout); err=$(port msb.stderr)
echo "ports: stdout=$out stderr=$err"
seq 1 20000 > "$out"
echo stderr-line > "$err"
cat /mnt/hello.txt > "$err"
for b in /sys/block/vd*; do echo "disk ${b##*/} serial=$(cat "$b/serial") ro=$(cat "$b/ro")"; done
echo written-by-guest > /mnt/from-guest.txt
"#;
    let initrd = dir.path().join("initrd.img");
    initramfs_with(&g.initramfs, &[test_script(script)], &initrd).unwrap();
    let mut p = plan(dir.path(), &g, &initrd, "quiet msb.tag=msbshare", accel(&g));
    p.shares.push(FsShare {
        tag: "msbshare".into(),
        socket: daemon.socket.clone(),
        num_queues: 1,
        queue_size: 1024,
    });
    p.disks.push(Disk {
        path: disk,
        format: DiskFormat::Raw,
        readonly: true,
        serial: "msb-d0".into(),
    });
    let run = boot(&p);
    eprintln!(
        "{test}: {:?} boot-to-exit {} ms",
        p.accel,
        run.took.as_millis()
    );
    assert_eq!(run.exit, VmmExit::PoweredOff, "console:\n{}", run.console);
    assert!(
        run.console.contains("MSB-TEST-END status=0"),
        "console:\n{}",
        run.console
    );
    assert!(
        run.console.contains("mounted virtiofs tag msbshare"),
        "console:\n{}",
        run.console
    );
    assert!(
        run.console.contains("disk vda serial=msb-d0 ro=1"),
        "console:\n{}",
        run.console
    );
    let expected: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    assert!(
        run.stdout == expected.as_bytes(),
        "stdout: {} bytes, expected {}",
        run.stdout.len(),
        expected.len()
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stderr),
        "stderr-line\nfrom-host\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("share/from-guest.txt")).unwrap(),
        "written-by-guest\n"
    );
}

#[test]
fn qemu_guest_panic_exits_1_and_is_classified() {
    let test = "qemu_guest_panic_exits_1_and_is_classified";
    let Some(g) = prerequisites(test) else { return };
    // pvpanic is built into msb's kernel; a kernel with it as modules
    // (Debian's) gets them loaded first.
    let pvpanic = g.modules.join("kernel/drivers/misc/pvpanic");
    let builtin = std::fs::read_to_string(g.modules.join("modules.builtin"))
        .is_ok_and(|b| b.contains("pvpanic/pvpanic-pci.ko"));
    let dir = tempfile::tempdir().unwrap();
    let files = if builtin {
        vec![test_script("echo c > /proc/sysrq-trigger\n")]
    } else {
        let (Ok(core), Ok(pci)) = (
            std::fs::read(pvpanic.join("pvpanic.ko")),
            std::fs::read(pvpanic.join("pvpanic-pci.ko")),
        ) else {
            return skip(
                test,
                &format!("no pvpanic in the kernel nor in {}", pvpanic.display()),
            );
        };
        let module = |name: &str, data: Vec<u8>| CpioFile {
            name: format!("lib/modules/{name}"),
            mode: 0o644,
            data,
        };
        vec![
            module("pvpanic.ko", core),
            module("pvpanic-pci.ko", pci),
            test_script("insmod /lib/modules/pvpanic.ko\ninsmod /lib/modules/pvpanic-pci.ko\necho c > /proc/sysrq-trigger\n"),
        ]
    };
    let initrd = dir.path().join("initrd.img");
    initramfs_with(&g.initramfs, &files, &initrd).unwrap();
    let run = boot(&plan(dir.path(), &g, &initrd, "quiet", accel(&g)));
    eprintln!("{test}: ended in {} ms", run.took.as_millis());
    assert_eq!(run.code, Some(1), "console:\n{}", run.console);
    assert_eq!(run.exit, VmmExit::GuestPanic, "console:\n{}", run.console);
    assert!(!run.console.contains("MSB-TEST-END"));
}

#[test]
fn qemu_guest_reboot_ends_qemu_with_0() {
    let test = "qemu_guest_reboot_ends_qemu_with_0";
    let Some(g) = prerequisites(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.img");
    initramfs_with(
        &g.initramfs,
        &[test_script("echo rebooting-now\nreboot -f\n")],
        &initrd,
    )
    .unwrap();
    let run = boot(&plan(dir.path(), &g, &initrd, "quiet", accel(&g)));
    eprintln!("{test}: ended in {} ms", run.took.as_millis());
    // -no-reboot: a reboot ends QEMU like a poweroff; only the missing
    // guest status (here: no end marker) tells them apart.
    assert_eq!(run.exit, VmmExit::PoweredOff, "console:\n{}", run.console);
    assert!(
        run.console.contains("rebooting-now"),
        "console:\n{}",
        run.console
    );
    assert!(!run.console.contains("MSB-TEST-END"));
}

#[test]
fn kvm_verdict_comes_in_bounded_time() {
    let test = "kvm_verdict_comes_in_bounded_time";
    let Some(g) = prerequisites(test) else { return };
    let start = Instant::now();
    let status = detect::kvm_status(&g.kernel);
    eprintln!("{test}: {status:?} in {} ms", start.elapsed().as_millis());
    // ioctl probe (2 s) + boot probe (4 s) at most, plus slack.
    assert!(start.elapsed() < Duration::from_secs(10));
    let (kind, accel) = detect::default_vmm(Path::new(&g.kernel));
    eprintln!("{test}: default VMM here: {kind:?} with {accel:?}");
}
