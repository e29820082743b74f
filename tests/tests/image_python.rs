//! A real Debian root with python3 (mmdebstrap, built once and cached
//! under `target/` by `scripts/lib/py-image.sh`) as an image: pushed to a
//! real registry with skopeo, pulled by `msb run --image`, run in a VM; a
//! sandbox of it runs python3 through `msb exec`. Two boots.

mod image_util;

use image_util::registry::Registry;
use msb_tests::sandbox_env::SandboxEnv;

#[test]
fn python_image_from_a_registry_in_a_vm_and_a_sandbox() {
    let layout = image_util::python_layout();
    let reg = Registry::start();
    reg.push(&layout, "py", "py:3", false);
    let reference = reg.reference("py:3");
    let env = SandboxEnv::new("image-python");

    let run = env
        .msb(&[
            "run",
            "--image",
            &reference,
            "--",
            "python3",
            "-c",
            "print(6*7)",
        ])
        .expect(0);
    assert_eq!(run.stdout, "42\n", "{}", run.describe());

    env.msb(&["create", "py", "--image", &reference]).expect(0);
    let script = "import os, sys; open('/root/note', 'w').write('kept'); \
                  print(sys.version_info[0], os.getuid(), open('/etc/debian_version').read().split('.')[0])";
    let out = env
        .msb(&["exec", "py", "--", "python3", "-c", script])
        .expect(0);
    assert_eq!(out.stdout, "3 0 12\n", "{}", out.describe());
    // The image's setuid root su, as the guest sees it; the note written.
    let out = env
        .msb(&[
            "exec",
            "py",
            "--",
            "sh",
            "-c",
            "stat -c '%U %a' /usr/bin/su; cat /root/note",
        ])
        .expect(0);
    assert_eq!(out.stdout, "root 4755\nkept", "{}", out.describe());
    env.msb(&["rm", "-f", "py"]).expect(0);
    env.assert_clean(std::time::Duration::from_secs(20));
}
