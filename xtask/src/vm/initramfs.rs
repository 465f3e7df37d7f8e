//! The lab VM's initramfs, built from the host's own programs: busybox,
//! btrfs-progs, sgdisk, mkfs.vfat, cryptsetup, util-linux's tools, compsize,
//! e2fsprogs' lsattr/chattr, each with its libraries and ELF interpreter;
//! the kernel modules; the rollback script byte for byte; and the guest
//! agent (crates/guest, `super::agent`) as /init. Cached under target/xtask/ by a
//! hash of everything that goes in.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write as _};

use anyhow::{bail, Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use sha2::{Digest, Sha256};
use xshell::cmd;

use super::cpio::CpioWriter;
use super::elf;
use super::modules::ModuleFile;
use super::plan::GuestTools;
use toolbox::process::{Output, Supervised};
use toolbox::setup::{self, Tool};

/// Bumped when the image's layout changes, so old cache entries are not reused.
const FORMAT: &str = "xtask-initramfs-6";
/// Where the agent lives in the image; /init links to it.
pub const AGENT_PATH: &str = "/bin/guest";
pub use lab_protocol::{hex, MODULES_LIST};
/// The rollback script, byte for byte.
pub const ROLLBACK_PATH: &str = "/etc/xtask/btrfs-rollback.sh";
/// Cache entries kept besides the newest.
const KEEP_CACHED: usize = 3;

/// Every program the guest runs, by its role in `GuestTools`.
pub const GUEST_TOOLS: &[Tool] = &[
    setup::BUSYBOX,
    setup::SGDISK,
    setup::MKFS_BTRFS,
    setup::BTRFS,
    setup::MKFS_VFAT,
    setup::CRYPTSETUP,
    setup::MKSWAP,
    setup::SWAPON,
    setup::SWAPOFF,
    setup::MOUNT,
    setup::UMOUNT,
    setup::BLKID,
    setup::FINDMNT,
    setup::LSATTR,
    setup::CHATTR,
    setup::COMPSIZE,
    setup::FSTRIM,
];

const fn tool(program: &'static str, package: &'static str) -> Tool {
    Tool { program, package }
}

/// The admin's shell, and the GNU tools checklist commands use (`cp
/// --reflink`, `sha256sum`, `find | xargs`, …): the same programs a NixOS
/// system has, from the host, each with its libraries. busybox's applets
/// stay behind them in PATH order only for the agent's own scripts.
pub const ADMIN_TOOLS: &[Tool] = &[
    tool("bash", "bash"),
    tool("grep", "grep"),
    tool("sed", "sed"),
    tool("find", "findutils"),
    tool("xargs", "findutils"),
    tool("diff", "diffutils"),
    tool("zstd", "zstd"),
    tool("lsblk", "util-linux"),
    tool("cp", "coreutils"),
    tool("mv", "coreutils"),
    tool("rm", "coreutils"),
    tool("ls", "coreutils"),
    tool("cat", "coreutils"),
    tool("mkdir", "coreutils"),
    tool("ln", "coreutils"),
    tool("touch", "coreutils"),
    tool("stat", "coreutils"),
    tool("date", "coreutils"),
    tool("sha256sum", "coreutils"),
    tool("head", "coreutils"),
    tool("tail", "coreutils"),
    tool("sort", "coreutils"),
    tool("cut", "coreutils"),
    tool("wc", "coreutils"),
    tool("tr", "coreutils"),
    tool("env", "coreutils"),
    tool("sleep", "coreutils"),
    tool("sync", "coreutils"),
    tool("readlink", "coreutils"),
    tool("basename", "coreutils"),
    tool("dirname", "coreutils"),
    tool("df", "coreutils"),
    tool("du", "coreutils"),
    tool("chmod", "coreutils"),
    tool("chown", "coreutils"),
    tool("id", "coreutils"),
    tool("cmp", "diffutils"),
    // §4.5 carries the machine's identity to the workstation in a tar stream.
    tool("tar", "tar"),
    // `sudo test …` runs the program, not the shell's builtin.
    tool("test", "coreutils"),
    // `cargo xtask verify` reads the partition table with it (util-linux on NixOS).
    setup::SFDISK,
    // `vm-test --serve-ssh`: the distribution's OpenSSH server (crates/guest/src/serve.rs).
    setup::SSHD,
];
/// Where the sudo and ssh shims go (first in the admin's PATH).
pub const SUDO_PATH: &str = "/usr/local/bin/sudo";
pub const SSH_PATH: &str = "/usr/local/bin/ssh";

/// Every tool a lab vm-test run needs on the host (its start installs them).
pub fn tools_for_vm_test() -> Vec<Tool> {
    let mut wanted = vec![setup::QEMU, setup::QEMU_IMG, setup::DEPMOD];
    wanted.extend_from_slice(GUEST_TOOLS);
    wanted.extend_from_slice(ADMIN_TOOLS);
    wanted.push(setup::LDD);
    wanted
}

/// Finds the guest's programs on the host.
pub fn host_tools() -> Result<GuestTools> {
    let mut wanted = GUEST_TOOLS.to_vec();
    wanted.extend_from_slice(ADMIN_TOOLS);
    wanted.push(setup::LDD);
    let found = setup::require(&wanted)?;
    let path = |tool: Tool| -> Result<String> { Ok(found.path(tool)?.to_string()) };
    Ok(GuestTools {
        busybox: path(setup::BUSYBOX)?,
        sgdisk: path(setup::SGDISK)?,
        mkfs_btrfs: path(setup::MKFS_BTRFS)?,
        btrfs: path(setup::BTRFS)?,
        mkfs_vfat: path(setup::MKFS_VFAT)?,
        cryptsetup: path(setup::CRYPTSETUP)?,
        mkswap: path(setup::MKSWAP)?,
        swapon: path(setup::SWAPON)?,
        swapoff: path(setup::SWAPOFF)?,
        mount: path(setup::MOUNT)?,
        umount: path(setup::UMOUNT)?,
        blkid: path(setup::BLKID)?,
        findmnt: path(setup::FINDMNT)?,
        lsattr: path(setup::LSATTR)?,
        chattr: path(setup::CHATTR)?,
        compsize: path(setup::COMPSIZE)?,
        fstrim: path(setup::FSTRIM)?,
        bash: path(ADMIN_TOOLS[0])?,
        grep: path(ADMIN_TOOLS[1])?,
    })
}

/// The admin tools' host paths (which are their paths in the image).
pub fn admin_programs() -> Result<Vec<Utf8PathBuf>> {
    let found = setup::require(ADMIN_TOOLS)?;
    ADMIN_TOOLS
        .iter()
        .map(|tool| Ok(found.path(*tool)?.clone()))
        .collect()
}

pub struct Inputs {
    /// Host paths, which are also the paths in the image.
    pub tools: GuestTools,
    /// The guest agent's binary, which runs as /init.
    pub agent: Utf8PathBuf,
    pub modules: Vec<ModuleFile>,
    pub rollback_script: Option<Utf8PathBuf>,
    /// The admin's shell and tools (`ADMIN_TOOLS`).
    pub admin_programs: Vec<Utf8PathBuf>,
    /// target/xtask/initramfs.
    pub cache_dir: Utf8PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Image {
    pub path: Utf8PathBuf,
    /// SHA-256 of the inputs (the cache key).
    pub hash: String,
    pub bytes: u64,
    pub files: usize,
    /// Built by an earlier run.
    pub reused: bool,
    pub rollback: Option<EmbeddedScript>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddedScript {
    pub guest_path: String,
    pub host_path: Utf8PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone)]
enum Entry {
    Directory(u32),
    File { source: Source, mode: u32 },
    Symlink(String),
    CharDevice(u32, u32),
}

#[derive(Debug, Clone)]
enum Source {
    Host(Utf8PathBuf),
    /// Decompressed on the way in (xz or zstd modules).
    Decompress(Utf8PathBuf),
    Bytes(Vec<u8>),
}

/// The image's entries by absolute path; parents are added as needed.
#[derive(Debug, Default)]
struct Spec {
    entries: BTreeMap<String, Entry>,
}

impl Spec {
    fn directory(&mut self, path: &str, mode: u32) {
        self.parents(path);
        self.entries.insert(path.to_owned(), Entry::Directory(mode));
    }

    fn parents(&mut self, path: &str) {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            prefix.push('/');
            prefix.push_str(part);
            self.entries
                .entry(prefix.clone())
                .or_insert(Entry::Directory(0o755));
        }
    }

    fn file(&mut self, path: &str, source: Source, mode: u32) {
        self.parents(path);
        self.entries
            .insert(path.to_owned(), Entry::File { source, mode });
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.entries
            .insert(path.to_owned(), Entry::Symlink(target.to_owned()));
    }

    /// A host program at its own path, with its interpreter and libraries.
    fn program(&mut self, path: &Utf8Path) -> Result<()> {
        self.file(path.as_str(), Source::Host(path.to_owned()), 0o755);
        let needs = elf::needs(path)?;
        for library in needs.interpreter.iter().chain(&needs.libraries) {
            self.file(library.as_str(), Source::Host(library.clone()), 0o755);
        }
        Ok(())
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn sha256_file(path: &Utf8Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("reading {path}"))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut file, &mut buffer)
            .with_context(|| format!("reading {path}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Builds the image, or finds it in the cache.
pub fn build(inputs: &Inputs) -> Result<Image> {
    let mut spec = Spec::default();
    for dir in ["/dev", "/proc", "/sys", "/run", "/sysroot", "/var/tmp"] {
        spec.directory(dir, 0o755);
    }
    spec.directory("/tmp", 0o1777);
    // The kernel opens it as /init's stdin, stdout and stderr.
    spec.parents("/dev/console");
    spec.entries
        .insert("/dev/console".to_owned(), Entry::CharDevice(5, 1));
    let mut programs: Vec<&str> = inputs.tools.programs().to_vec();
    programs.extend(inputs.admin_programs.iter().map(|p| p.as_str()));
    programs.retain(|p| !p.is_empty());
    programs.sort_unstable();
    programs.dedup();
    for program in programs {
        spec.program(Utf8Path::new(program))?;
    }
    // Scripts say #!/bin/sh; busybox's ash is what NixOS's initrd runs them with.
    spec.symlink("/bin/sh", &inputs.tools.busybox);
    if !inputs.admin_programs.is_empty() {
        // The agent, setuid root, is `sudo` when called by that name.
        spec.symlink(SUDO_PATH, AGENT_PATH);
        spec.file(
            SSH_PATH,
            Source::Bytes(lab_protocol::SSH_SHIM.as_bytes().to_vec()),
            0o755,
        );
    }

    std::fs::create_dir_all(&inputs.cache_dir)
        .with_context(|| format!("creating {}", inputs.cache_dir))?;
    let agent = stripped_agent(&inputs.agent, &inputs.cache_dir)?;
    // Setuid root: the admin's `sudo` is a link to it (crates/guest/src/sudo.rs);
    // as /init it runs as root anyway.
    spec.file(AGENT_PATH, Source::Host(agent), 0o4755);
    for library in elf::needs(&inputs.agent)?
        .interpreter
        .iter()
        .chain(&elf::needs(&inputs.agent)?.libraries)
    {
        spec.file(library.as_str(), Source::Host(library.clone()), 0o755);
    }
    spec.symlink("/init", AGENT_PATH);

    let mut module_paths = Vec::new();
    for module in &inputs.modules {
        let source = if module.source.as_str().ends_with(".ko") {
            Source::Host(module.source.clone())
        } else {
            Source::Decompress(module.source.clone())
        };
        spec.file(&module.guest_path, source, 0o644);
        module_paths.push(module.guest_path.clone());
    }
    spec.file(
        MODULES_LIST,
        Source::Bytes(serde_json::to_vec_pretty(&module_paths)?),
        0o644,
    );

    let rollback = match &inputs.rollback_script {
        Some(script) => {
            let bytes = std::fs::read(script).with_context(|| format!("reading {script}"))?;
            let sha256 = sha256_hex(&bytes);
            spec.file(ROLLBACK_PATH, Source::Bytes(bytes), 0o755);
            Some(EmbeddedScript {
                guest_path: ROLLBACK_PATH.to_owned(),
                host_path: script.clone(),
                sha256,
            })
        }
        None => None,
    };

    let hash = content_hash(&spec)?;
    let path = inputs.cache_dir.join(format!("{}.cpio", &hash[..32]));
    let files = spec
        .entries
        .values()
        .filter(|e| matches!(e, Entry::File { .. }))
        .count();
    let reused = path.is_file();
    if !reused {
        write_image(&spec, &path)?;
        prune(&inputs.cache_dir, "cpio", &path);
    } else {
        touch(&path);
    }
    let bytes = std::fs::metadata(&path)
        .with_context(|| format!("reading {path}"))?
        .len();
    Ok(Image {
        path,
        hash,
        bytes,
        files,
        reused,
        rollback,
    })
}

/// A hash of every path, mode, link target and content in the image.
fn content_hash(spec: &Spec) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(FORMAT.as_bytes());
    for (path, entry) in &spec.entries {
        hasher.update(path.as_bytes());
        hasher.update([0]);
        match entry {
            Entry::Directory(mode) => hasher.update(format!("d{mode:o}")),
            Entry::Symlink(target) => hasher.update(format!("l{target}")),
            Entry::CharDevice(major, minor) => hasher.update(format!("c{major}:{minor}")),
            Entry::File { source, mode } => {
                let content = match source {
                    Source::Host(p) => sha256_file(p)?,
                    Source::Decompress(p) => format!("unpacked:{}", sha256_file(p)?),
                    Source::Bytes(b) => sha256_hex(b),
                };
                hasher.update(format!("f{mode:o}:{content}"));
            }
        }
        hasher.update([0]);
    }
    Ok(hex(&hasher.finalize()))
}

fn write_image(spec: &Spec, path: &Utf8Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Utf8Path::new("."));
    let temporary = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {dir}"))?;
    let mut writer = CpioWriter::new(BufWriter::new(temporary.as_file()));
    for (name, entry) in &spec.entries {
        match entry {
            Entry::Directory(mode) => writer.directory(name, *mode)?,
            Entry::Symlink(target) => writer.symlink(name, target)?,
            Entry::CharDevice(major, minor) => writer.char_device(name, 0o600, *major, *minor)?,
            Entry::File { source, mode } => {
                let bytes = match source {
                    Source::Host(p) => std::fs::read(p).with_context(|| format!("reading {p}"))?,
                    Source::Decompress(p) => decompress(p)?,
                    Source::Bytes(b) => b.clone(),
                };
                writer.file(name, *mode, &bytes)?;
            }
        }
    }
    let mut out = writer.finish().context("writing the initramfs")?;
    out.flush()?;
    drop(out);
    temporary
        .persist(path)
        .with_context(|| format!("saving {path}"))?;
    Ok(())
}

fn decompress(path: &Utf8Path) -> Result<Vec<u8>> {
    let sh = toolbox::project::shell()?;
    let tool = if path.as_str().ends_with(".xz") {
        setup::XZ
    } else if path.as_str().ends_with(".zst") {
        setup::ZSTD
    } else {
        bail!("{path}: only .ko, .ko.xz and .ko.zst modules are supported");
    };
    let found = setup::require(&[tool])?;
    let program = found.path(tool)?;
    // A module is a few MiB; the cap only guards against a runaway.
    let output = Supervised::from_command(cmd!(sh, "{program} -dc {path}"))
        .stdout(Output::keep(1 << 30))
        .checked()
        .with_context(|| format!("decompressing {path}"))?;
    Ok(output.stdout)
}

/// The agent without debug info (a tenth of the size), cached by the
/// binary's hash; the binary itself when `strip` is not installed.
fn stripped_agent(agent: &Utf8Path, cache_dir: &Utf8Path) -> Result<Utf8PathBuf> {
    let Some(strip) = setup::find(setup::STRIP) else {
        return Ok(agent.to_owned());
    };
    let hash = sha256_file(agent)?;
    let stripped = cache_dir.join(format!("agent-{}.bin", &hash[..32]));
    if stripped.is_file() {
        touch(&stripped);
        return Ok(stripped);
    }
    let temporary = cache_dir.join(format!("agent-{}.tmp{}", &hash[..32], std::process::id()));
    let sh = toolbox::project::shell()?;
    let result = Supervised::from_command(cmd!(sh, "{strip} --strip-debug -o {temporary} {agent}"))
        .checked();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
        return Ok(agent.to_owned());
    }
    std::fs::rename(&temporary, &stripped).with_context(|| format!("saving {stripped}"))?;
    prune(cache_dir, "bin", &stripped);
    Ok(stripped)
}

/// Marks a cache entry as recently used.
fn touch(path: &Utf8Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Keeps the newest few cache entries with this extension.
fn prune(dir: &Utf8Path, extension: &str, keep: &Utf8Path) {
    let Ok(entries) = dir.read_dir_utf8() else {
        return;
    };
    let mut cached: Vec<(std::time::SystemTime, Utf8PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension() == Some(extension) && e.path() != keep)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path().to_owned())))
        .collect();
    cached.sort();
    cached.reverse();
    for (_, old) in cached.into_iter().skip(KEEP_CACHED) {
        let _ = std::fs::remove_file(old);
    }
}

#[cfg(test)]
mod tests {
    use super::super::cpio;
    use super::*;

    fn fake_inputs(cache: &Utf8Path, script: Option<Utf8PathBuf>) -> Inputs {
        let sh = Utf8PathBuf::from(which::which("sh").unwrap().to_str().unwrap());
        let sh = sh.canonicalize_utf8().unwrap();
        let tools = GuestTools {
            busybox: sh.to_string(),
            ..GuestTools::default()
        };
        let mut tools = tools;
        for field in [
            &mut tools.sgdisk,
            &mut tools.mkfs_btrfs,
            &mut tools.btrfs,
            &mut tools.mkfs_vfat,
            &mut tools.cryptsetup,
            &mut tools.mkswap,
            &mut tools.swapon,
            &mut tools.swapoff,
            &mut tools.mount,
            &mut tools.umount,
            &mut tools.blkid,
            &mut tools.findmnt,
            &mut tools.lsattr,
            &mut tools.chattr,
            &mut tools.compsize,
            &mut tools.fstrim,
        ] {
            *field = sh.to_string();
        }
        let module = cache.join("fake.ko");
        std::fs::write(&module, b"\x7fELF module").unwrap();
        Inputs {
            tools,
            agent: sh.clone(),
            modules: vec![ModuleFile {
                name: "fake".into(),
                source: module,
                guest_path: "/lib/modules/6.1.0-test/kernel/fake.ko".into(),
            }],
            rollback_script: script,
            admin_programs: vec![sh.clone()],
            cache_dir: cache.join("initramfs"),
        }
    }

    #[test]
    fn holds_programs_libraries_modules_and_the_script_and_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::from_path_buf(dir.path().to_owned()).unwrap();
        let script = root.join("rollback.sh");
        std::fs::write(&script, "#!/bin/sh\necho 'btrfs-rollback: ok'\n").unwrap();
        let inputs = fake_inputs(&root, Some(script.clone()));

        let image = build(&inputs).unwrap();
        assert!(!image.reused);
        let archive = std::fs::read(&image.path).unwrap();
        let entries = cpio::read(&archive).unwrap();
        let find = |name: &str| {
            entries
                .iter()
                .find(|e| e.name == name.trim_start_matches('/'))
        };

        let init = find("/init").expect("/init");
        assert_eq!(init.data, AGENT_PATH.as_bytes());
        assert!(find(AGENT_PATH).is_some());
        let sh = &inputs.tools.busybox;
        assert_eq!(find(sh).unwrap().mode & 0o777, 0o755);
        for library in elf::needs(Utf8Path::new(sh)).unwrap().libraries {
            assert!(find(library.as_str()).is_some(), "{library} missing");
        }
        if let Some(interpreter) = elf::needs(Utf8Path::new(sh)).unwrap().interpreter {
            assert!(find(interpreter.as_str()).is_some());
        }
        let modules: Vec<String> =
            serde_json::from_slice(&find(MODULES_LIST).unwrap().data).unwrap();
        assert_eq!(modules, ["/lib/modules/6.1.0-test/kernel/fake.ko"]);
        assert_eq!(find(&modules[0]).unwrap().data, b"\x7fELF module");
        // The script byte for byte, and its hash for the guest to check.
        assert_eq!(
            find(ROLLBACK_PATH).unwrap().data,
            std::fs::read(&script).unwrap()
        );
        assert_eq!(
            image.rollback.as_ref().unwrap().sha256,
            sha256_hex(&std::fs::read(&script).unwrap())
        );
        // Parents come before children, and /tmp is sticky.
        let position = |n: &str| entries.iter().position(|e| e.name == n).unwrap();
        assert!(position("lib/modules") < position("lib/modules/6.1.0-test/kernel/fake.ko"));
        assert_eq!(find("/tmp").unwrap().mode & 0o7777, 0o1777);
        // The sudo and ssh shims come with the admin's tools; sudo runs the
        // agent, which is setuid root.
        let sudo = find(SUDO_PATH).expect("the sudo link");
        assert_eq!(sudo.data, AGENT_PATH.as_bytes());
        assert_eq!(find(AGENT_PATH).unwrap().mode & 0o7777, 0o4755);
        let ssh = find(SSH_PATH).expect("the ssh shim");
        assert_eq!(ssh.data, lab_protocol::SSH_SHIM.as_bytes());

        // Same inputs: the cached image. A changed script: a new one.
        let again = build(&inputs).unwrap();
        assert!(again.reused);
        assert_eq!(again.path, image.path);
        std::fs::write(&script, "#!/bin/sh\necho changed\n").unwrap();
        let changed = build(&inputs).unwrap();
        assert!(!changed.reused);
        assert_ne!(changed.hash, image.hash);
    }
}
