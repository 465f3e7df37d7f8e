//! The shared libraries and the ELF interpreter a host program needs, so
//! that it runs in the initramfs exactly as it runs on the host. `ldd`
//! resolves them the way the dynamic loader will (ld.so.cache, RUNPATH).

use anyhow::{bail, Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::cmd;

use toolbox::process::Supervised;
use toolbox::setup;

/// What one program needs besides itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// The ELF interpreter (`/lib64/ld-linux-x86-64.so.2`), `None` for static programs.
    pub interpreter: Option<Utf8PathBuf>,
    /// Libraries, at the paths the loader will open.
    pub libraries: Vec<Utf8PathBuf>,
}

/// Asks `ldd` what `program` loads.
pub fn needs(program: &Utf8Path) -> Result<Needs> {
    let found = setup::require(&[setup::LDD])?;
    let ldd = found.path(setup::LDD)?;
    let sh = toolbox::project::shell()?;
    let output = Supervised::from_command(cmd!(sh, "{ldd} {program}"))
        .run()
        .with_context(|| format!("running ldd {program}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.success() {
        // glibc's ldd says so for static programs, on stdout or stderr.
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Needs::default());
        }
        bail!("ldd {program} failed: {}", stderr.trim());
    }
    parse_ldd(&stdout).with_context(|| format!("ldd {program}"))
}

/// Reads ldd's output:
/// ```text
///     linux-vdso.so.1 (0x…)
///     libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)
///     /lib64/ld-linux-x86-64.so.2 (0x…)
/// ```
pub fn parse_ldd(output: &str) -> Result<Needs> {
    let mut needs = Needs::default();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") {
            continue;
        }
        if let Some((name, rest)) = line.split_once("=>") {
            let target = rest.trim();
            if target.starts_with("not found") {
                bail!("{} is not found on this machine", name.trim());
            }
            let path = target.split(" (").next().unwrap_or(target).trim();
            if path.is_empty() {
                // The vDSO on some versions: `linux-vdso.so.1 =>  (0x…)`.
                continue;
            }
            if !path.starts_with('/') {
                bail!("unexpected ldd line {line:?}");
            }
            needs.libraries.push(path.into());
        } else if line.starts_with('/') {
            let path = line.split(" (").next().unwrap_or(line).trim();
            needs.interpreter = Some(path.into());
        }
        // Anything else is the vDSO, which the kernel provides.
    }
    Ok(needs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_glibc_ldd() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibcryptsetup.so.12 => /lib/x86_64-linux-gnu/libcryptsetup.so.12 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let needs = parse_ldd(output).unwrap();
        assert_eq!(
            needs.interpreter.as_deref(),
            Some(Utf8Path::new("/lib64/ld-linux-x86-64.so.2"))
        );
        assert_eq!(
            needs.libraries,
            [
                Utf8PathBuf::from("/lib/x86_64-linux-gnu/libcryptsetup.so.12"),
                Utf8PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")
            ]
        );
    }

    #[test]
    fn missing_libraries_are_errors() {
        let error = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(error.to_string().contains("libfoo.so.1"), "{error}");
    }

    #[test]
    fn static_programs_need_nothing() {
        assert_eq!(
            parse_ldd("\tstatically linked\n").unwrap(),
            Needs::default()
        );
        if let Ok(found) = setup::require(&[setup::BUSYBOX]) {
            // Debian's busybox-static.
            let needs = needs(found.path(setup::BUSYBOX).unwrap()).unwrap();
            assert!(needs.libraries.is_empty());
        }
    }

    #[test]
    fn a_real_dynamic_program() {
        let needs = needs(Utf8Path::new("/bin/sh")).unwrap();
        assert!(needs.interpreter.is_some() || needs.libraries.is_empty());
    }
}
