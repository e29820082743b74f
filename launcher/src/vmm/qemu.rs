//! The QEMU backend: the exact `qemu-system-x86_64` command line for a
//! [`VmPlan`].
//!
//! Choices, each measured on this machine (QEMU 7.2 under TCG, msb's guest
//! kernel; `scripts/bench-boot`, figures in the README):
//! - The `q35` machine, without the devices it has by default and msb does
//!   not use (SATA, SMBus, VMware port, SMM, PS/2 controller): fewer
//!   devices for the guest to enumerate. Not `pc`: its ACPI PCI interrupt
//!   links cost 150-300 ms of guest boot per device under TCG. Not
//!   `-M microvm`: it has no HPET or ACPI PM timer, so under TCG on a loaded
//!   host the kernel cannot calibrate the TSC and hangs early in boot (it
//!   also hung here with msb's kernel unless given the TSC rate).
//! - qboot (`-bios qboot.rom`, shipped with QEMU) instead of SeaBIOS: it
//!   only sets up what a Linux boot needs (~50 ms less).
//! - Under TCG the kernel gets [`TCG_KERNEL_PARAMS`], and with one vCPU
//!   also [`TCG_UP_KERNEL_PARAMS`] (see there for what each saves).
//! - Guest RAM is a shared memfd (`share=on`), bound through a NUMA node:
//!   vhost-user needs the daemon to map guest memory.
//! - The command's stdout/stderr are two `virtserialport`s named
//!   `msb.stdout` / `msb.stderr` on a `virtio-serial-pci` controller, backed
//!   by `-chardev file` on the launcher's FIFOs. Not `-chardev pipe`: on a
//!   single FIFO path QEMU opens it read-write and reads back its own output
//!   whenever the guest holds the port open (measured: the first of 200
//!   lines was lost). `file` opens the FIFO write-only; that open blocks
//!   until the launcher has the FIFO open for reading, so open it first.
//!   The controller gets only as many ports as are used (`max_ports`; the
//!   default 31 makes the guest set up 64 virtqueues).
//! - The kernel console (ttyS0) goes to `plan.console_log`.
//! - `-no-reboot` plus `panic=-1`: a guest reboot or panic ends QEMU. With a
//!   `pvpanic-pci` device and `-action panic=exit-failure`, a guest kernel
//!   with pvpanic (built into msb's kernel; a module in Debian's) makes QEMU
//!   exit 1 on a panic (without it a panic reboots, and QEMU exits 0 like a
//!   poweroff).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::process::ExitStatus;

use guest_init::protocol::AGENT_PORT;

use super::{kernel_cmdline, Accel, DiskFormat, VmPlan, VmmExit};

/// Kernel parameters the QEMU backend adds to `plan.cmdline`. `loglevel=6`
/// (after the plan's own, so it wins) puts the kernel's first two lines,
/// its version and command line, on the console: with qboot nothing else
/// shows that the guest started before msb-init does, and the boot
/// deadline's diagnosis tells "the VM never ran" from "the kernel never
/// started msb-init" by the console being empty or not.
pub const QEMU_KERNEL_PARAMS: &str = "console=ttyS0 panic=-1 loglevel=6";

/// Kernel parameters added under TCG: `no_timer_check` skips the check that
/// the timer interrupt works through the IO-APIC (a wait of several ticks).
pub const TCG_KERNEL_PARAMS: &str = "no_timer_check";

/// Kernel parameters added under TCG with one vCPU. `noapictimer`: the
/// local APIC timer would be calibrated against the PIT for 100 ms of
/// guest time; the HPET serves as the tick instead (with several vCPUs
/// every tick would then be broadcast, which measured slower).
/// `noreplace-smp`: leaves the kernel's `lock` prefixes in place instead of
/// patching thousands of them out for a single CPU (~60 ms of guest boot).
pub const TCG_UP_KERNEL_PARAMS: &str = "noapictimer noreplace-smp";

/// The `-machine` value: q35 without the default devices msb does not use.
pub const MACHINE: &str = "q35,sata=off,smbus=off,vmport=off,smm=off,i8042=off";

/// The firmware: QEMU's qboot (found in QEMU's data directory).
pub const FIRMWARE: &str = "qboot.rom";

/// The virtio-serial port names carrying the command's stdout and stderr.
pub const STDOUT_PORT: &str = "msb.stdout";
/// See [`STDOUT_PORT`].
pub const STDERR_PORT: &str = "msb.stderr";

/// The `-drive format=` value of a disk format (always given: QEMU's own
/// probing would let a guest that writes an image header into a raw disk
/// change how it opens next time).
pub fn drive_format(format: DiskFormat) -> &'static str {
    format.name()
}

/// The exact arguments (program name excluded) of `qemu-system-x86_64` for
/// `plan`. Option values that QEMU parses as `key=value` lists have their
/// commas doubled, so any path works.
pub fn qemu_argv(plan: &VmPlan) -> Vec<OsString> {
    let mut a = Args::default();
    a.flags(&["-machine", MACHINE, "-bios", FIRMWARE]);
    match plan.accel {
        Accel::Tcg => a.flags(&["-accel", "tcg"]),
        Accel::Kvm => a.flags(&["-accel", "kvm", "-cpu", "host"]),
    }
    let mem = format!("{}M", plan.memory_mib);
    a.flag("-m").flag(&mem);
    a.flag("-smp").flag(&plan.cpus.to_string());
    a.flags(&["-nographic", "-nodefaults", "-no-user-config", "-no-reboot"]);
    a.flag("-object")
        .flag(&format!("memory-backend-memfd,id=mem,size={mem},share=on"));
    a.flags(&["-numa", "node,memdev=mem"]);
    a.flag("-kernel").path(&plan.kernel);
    a.flag("-initrd").path(&plan.initramfs);
    a.flag("-append")
        .flag(&kernel_cmdline(&plan.cmdline, &kernel_params(plan)));
    a.flag("-chardev")
        .opts(&[("", b"file"), ("id", b"console")], &plan.console_log);
    a.flags(&["-serial", "chardev:console"]);
    a.flags(&["-device", "pvpanic-pci", "-action", "panic=exit-failure"]);
    for (i, share) in plan.shares.iter().enumerate() {
        let id = format!("fs{i}");
        a.flag("-chardev")
            .opts(&[("", b"socket"), ("id", id.as_bytes())], &share.socket);
        let mut dev = OptList::new("vhost-user-fs-pci");
        dev.kv("queue-size", share.queue_size.to_string().as_bytes())
            .kv(
                "num-request-queues",
                share.num_queues.to_string().as_bytes(),
            )
            .kv("chardev", id.as_bytes())
            .kv("tag", share.tag.as_bytes());
        a.flag("-device").push(dev.finish());
    }
    for (i, disk) in plan.disks.iter().enumerate() {
        let id = format!("disk{i}");
        let mut drive = OptList::default();
        drive
            .kv("file", disk.path.as_os_str().as_bytes())
            .kv("if", b"none")
            .kv("id", id.as_bytes())
            .kv("format", drive_format(disk.format).as_bytes());
        if disk.readonly {
            drive.kv("readonly", b"on");
        }
        a.flag("-drive").push(drive.finish());
        let mut dev = OptList::new("virtio-blk-pci");
        dev.kv("drive", id.as_bytes())
            .kv("serial", disk.serial.as_bytes());
        a.flag("-device").push(dev.finish());
    }
    // Port 0 is reserved for a console: one more than the ports used.
    let ports = 3 + usize::from(plan.agent_socket.is_some());
    a.flag("-device")
        .flag(&format!("virtio-serial-pci,id=vser,max_ports={ports}"));
    for (id, fifo, name) in [
        ("stdout", &plan.stdout_fifo, STDOUT_PORT),
        ("stderr", &plan.stderr_fifo, STDERR_PORT),
    ] {
        a.flag("-chardev")
            .opts(&[("", b"file"), ("id", id.as_bytes())], fifo);
        a.flag("-device").flag(&format!(
            "virtserialport,bus=vser.0,chardev={id},name={name}"
        ));
    }
    if let Some(socket) = &plan.agent_socket {
        // QEMU listens; the supervisor connects once QEMU is up. No wait:
        // the guest boots while nobody is connected yet.
        a.flag("-chardev").opts(
            &[
                ("", b"socket"),
                ("id", b"agent"),
                ("server", b"on"),
                ("wait", b"off"),
            ],
            socket,
        );
        a.flag("-device").flag(&format!(
            "virtserialport,bus=vser.0,chardev=agent,name={AGENT_PORT}"
        ));
    }
    a.0
}

/// The parameters the QEMU backend adds to the kernel command line.
fn kernel_params(plan: &VmPlan) -> String {
    let mut params = QEMU_KERNEL_PARAMS.to_string();
    if plan.accel == Accel::Tcg {
        params.push(' ');
        params.push_str(TCG_KERNEL_PARAMS);
        if plan.cpus == 1 {
            params.push(' ');
            params.push_str(TCG_UP_KERNEL_PARAMS);
        }
    }
    params
}

/// The kernel's panic banner; printed on the console whatever the log level.
pub const PANIC_BANNER: &str = "Kernel panic - not syncing";

/// What a QEMU exit means. QEMU exits 0 on a guest poweroff, and also on a
/// guest reboot (`-no-reboot`) and on SIGTERM/SIGINT; 1 both on start-up
/// errors (message in its log) and on a guest panic reported through
/// pvpanic (nothing in its log): `console` (the text of `plan.console_log`,
/// or its tail) tells the two apart by the kernel's panic banner.
pub fn qemu_exit(status: ExitStatus, console: &str) -> VmmExit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        // Without pvpanic a panic reboots, and -no-reboot makes that exit 0.
        (Some(0 | 1), _) if console.contains(PANIC_BANNER) => VmmExit::GuestPanic,
        (Some(0), _) => VmmExit::PoweredOff,
        (Some(code), _) => VmmExit::Failed(code),
        (None, Some(sig)) => VmmExit::Killed(sig),
        (None, None) => VmmExit::Failed(-1),
    }
}

/// An argv under construction.
#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn flag(&mut self, s: &str) -> &mut Self {
        self.0.push(s.into());
        self
    }

    fn flags(&mut self, s: &[&str]) {
        self.0.extend(s.iter().map(OsString::from));
    }

    fn path(&mut self, p: &Path) -> &mut Self {
        self.0.push(p.as_os_str().to_owned());
        self
    }

    fn push(&mut self, s: OsString) -> &mut Self {
        self.0.push(s);
        self
    }

    /// `-chardev`-style value: the given pairs, then `path=<path>`.
    fn opts(&mut self, pairs: &[(&str, &[u8])], path: &Path) -> &mut Self {
        let mut list = OptList::default();
        for (k, v) in pairs {
            if k.is_empty() {
                list.bare(v);
            } else {
                list.kv(k, v);
            }
        }
        list.kv("path", path.as_os_str().as_bytes());
        self.push(list.finish())
    }
}

/// A QEMU `key=value,…` option string; values have `,` doubled.
#[derive(Default)]
struct OptList(Vec<u8>);

impl OptList {
    fn new(first: &str) -> Self {
        OptList(first.as_bytes().to_vec())
    }

    fn sep(&mut self) {
        if !self.0.is_empty() {
            self.0.push(b',');
        }
    }

    fn bare(&mut self, v: &[u8]) -> &mut Self {
        self.sep();
        self.0.extend_from_slice(v);
        self
    }

    fn kv(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.sep();
        self.0.extend_from_slice(key.as_bytes());
        self.0.push(b'=');
        for &b in value {
            if b == b',' {
                self.0.push(b',');
            }
            self.0.push(b);
        }
        self
    }

    fn finish(self) -> OsString {
        OsString::from_vec(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::test_plans::{full_plan, minimal_plan};

    fn strings(v: Vec<OsString>) -> Vec<String> {
        v.into_iter()
            .map(|s| s.into_string().expect("utf-8 argv"))
            .collect()
    }

    #[test]
    fn minimal_plan_argv_tcg() {
        let expected = [
            "-machine",
            "q35,sata=off,smbus=off,vmport=off,smm=off,i8042=off",
            "-bios",
            "qboot.rom",
            "-accel",
            "tcg",
            "-m",
            "256M",
            "-smp",
            "1",
            "-nographic",
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-object",
            "memory-backend-memfd,id=mem,size=256M,share=on",
            "-numa",
            "node,memdev=mem",
            "-kernel",
            "/k/vmlinuz",
            "-initrd",
            "/k/initrd.gz",
            "-append",
            "quiet console=ttyS0 panic=-1 loglevel=6 no_timer_check noapictimer noreplace-smp",
            "-chardev",
            "file,id=console,path=/run/x/console.log",
            "-serial",
            "chardev:console",
            "-device",
            "pvpanic-pci",
            "-action",
            "panic=exit-failure",
            "-device",
            "virtio-serial-pci,id=vser,max_ports=3",
            "-chardev",
            "file,id=stdout,path=/run/x/stdout.fifo",
            "-device",
            "virtserialport,bus=vser.0,chardev=stdout,name=msb.stdout",
            "-chardev",
            "file,id=stderr,path=/run/x/stderr.fifo",
            "-device",
            "virtserialport,bus=vser.0,chardev=stderr,name=msb.stderr",
        ];
        assert_eq!(strings(qemu_argv(&minimal_plan())), expected);
    }

    #[test]
    fn full_plan_argv_kvm() {
        let expected = [
            "-machine",
            "q35,sata=off,smbus=off,vmport=off,smm=off,i8042=off",
            "-bios",
            "qboot.rom",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "1024M",
            "-smp",
            "2",
            "-nographic",
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-object",
            "memory-backend-memfd,id=mem,size=1024M,share=on",
            "-numa",
            "node,memdev=mem",
            "-kernel",
            "/k/vmlinuz",
            "-initrd",
            "/k/initrd.gz",
            "-append",
            "quiet loglevel=3 console=ttyS0 panic=-1 loglevel=6 -- init-arg",
            "-chardev",
            "file,id=console,path=/run/x/console.log",
            "-serial",
            "chardev:console",
            "-device",
            "pvpanic-pci",
            "-action",
            "panic=exit-failure",
            "-chardev",
            "socket,id=fs0,path=/run/x/msb-control.sock",
            "-device",
            "vhost-user-fs-pci,queue-size=1024,num-request-queues=1,chardev=fs0,tag=msb-control",
            "-chardev",
            "socket,id=fs1,path=/run/x/odd,,name.sock",
            "-device",
            "vhost-user-fs-pci,queue-size=512,num-request-queues=2,chardev=fs1,tag=msb-m0",
            "-drive",
            "file=/data/disk.raw,if=none,id=disk0,format=raw",
            "-device",
            "virtio-blk-pci,drive=disk0,serial=msb-d0",
            "-drive",
            "file=/data/a,,b.qcow2,if=none,id=disk1,format=qcow2,readonly=on",
            "-device",
            "virtio-blk-pci,drive=disk1,serial=msb-d1",
            "-drive",
            "file=/data/c.vmdk,if=none,id=disk2,format=vmdk",
            "-device",
            "virtio-blk-pci,drive=disk2,serial=msb-d2",
            "-device",
            "virtio-serial-pci,id=vser,max_ports=3",
            "-chardev",
            "file,id=stdout,path=/run/x/stdout.fifo",
            "-device",
            "virtserialport,bus=vser.0,chardev=stdout,name=msb.stdout",
            "-chardev",
            "file,id=stderr,path=/run/x/stderr.fifo",
            "-device",
            "virtserialport,bus=vser.0,chardev=stderr,name=msb.stderr",
        ];
        assert_eq!(strings(qemu_argv(&full_plan())), expected);
    }

    #[test]
    fn tcg_kernel_params_depend_on_the_vcpu_count() {
        let append = |plan: &VmPlan| {
            let argv = strings(qemu_argv(plan));
            let i = argv.iter().position(|a| a == "-append").expect("-append");
            argv[i + 1].clone()
        };
        let mut plan = minimal_plan();
        plan.cpus = 2;
        assert_eq!(
            append(&plan),
            "quiet console=ttyS0 panic=-1 loglevel=6 no_timer_check"
        );
        plan.accel = Accel::Kvm;
        assert_eq!(append(&plan), "quiet console=ttyS0 panic=-1 loglevel=6");
    }

    #[test]
    fn exit_statuses_map() {
        use std::os::unix::process::ExitStatusExt;
        let code = |c: i32| ExitStatus::from_raw(c << 8);
        let panic_log = "[    3.02] Kernel panic - not syncing: sysrq triggered crash\n";
        assert_eq!(qemu_exit(code(0), ""), VmmExit::PoweredOff);
        assert_eq!(qemu_exit(code(0), panic_log), VmmExit::GuestPanic);
        assert_eq!(qemu_exit(code(1), panic_log), VmmExit::GuestPanic);
        assert_eq!(qemu_exit(code(1), "booting"), VmmExit::Failed(1));
        assert_eq!(
            qemu_exit(ExitStatus::from_raw(libc::SIGKILL), ""),
            VmmExit::Killed(libc::SIGKILL)
        );
    }

    #[test]
    fn non_utf8_paths_pass_through() {
        let mut plan = minimal_plan();
        plan.console_log = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"/r/\xff,log"));
        let argv = qemu_argv(&plan);
        let i = argv
            .iter()
            .position(|a| a.as_bytes().starts_with(b"file,id=console"))
            .expect("console chardev");
        assert_eq!(argv[i].as_bytes(), b"file,id=console,path=/r/\xff,,log");
    }

    #[test]
    fn agent_channel_is_a_listening_socket_port() {
        let mut plan = minimal_plan();
        plan.agent_socket = Some("/run/x/a,gent.sock".into());
        let argv = strings(qemu_argv(&plan));
        let tail: Vec<&str> = argv[argv.len() - 4..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "-chardev",
                "socket,id=agent,server=on,wait=off,path=/run/x/a,,gent.sock",
                "-device",
                "virtserialport,bus=vser.0,chardev=agent,name=msb.agent",
            ]
        );
        assert!(argv.contains(&"virtio-serial-pci,id=vser,max_ports=4".to_string()));
        plan.agent_socket = None;
        assert!(!strings(qemu_argv(&plan))
            .iter()
            .any(|a| a.contains("agent")));
    }
}
