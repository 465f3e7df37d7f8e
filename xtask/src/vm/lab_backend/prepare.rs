//! Before the first boot: the host evaluated and checked, the kernel, tools
//! and image found or built, the checklist's procedures for this host.

use crate::vm::plan::{PLACE_LOCAL, PLACE_RESCUE, PLACE_SERVER};
use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use camino::Utf8PathBuf;

use super::*;
use crate::deploy_checklist::facts::HostFacts;
use crate::deploy_checklist::Numbered;
use crate::hosts;
use crate::hosts::Model;
use crate::nix_eval::Nix;
use crate::rules;
use crate::vm::accel::{self, Accel};
use crate::vm::agent;
use crate::vm::initramfs::{self, Image};
use crate::vm::kernel::{self, Kernel};
use crate::vm::modules::{self, Index};
use crate::vm::month::{self, MONTH_BOOT};
use crate::vm::plan::AdminLogin;
use crate::vm::procedure_runs::{self};
use crate::vm::realise::{RollbackSettings, Tamper};
use crate::vm::retention::{Rules, DAY};
use layout::findings::Severity;
use layout::size::parse_disk_size;
use toolbox::project::xtask_dir;
use toolbox::setup;

/// Everything a boot needs that does not change between boots.
pub struct Prepared {
    pub layout: layout::Layout,
    pub machine: hosts::Machine,
    pub disk_bytes: BTreeMap<String, u64>,
    pub kernel: Kernel,
    pub image: Image,
    pub accel: Accel,
    pub accel_reason: String,
    pub qemu: Utf8PathBuf,
    pub qemu_img: Utf8PathBuf,
    pub tools: crate::vm::plan::GuestTools,
    pub rollback_settings: RollbackSettings,
    /// The checklist's §3 and §4, from its one source, for this host.
    pub procedures: Vec<Numbered>,
    /// What the procedures need to know of the lab (no lost file yet).
    pub lab: procedure_runs::Lab,
    /// The host's periodic TRIM (nix/lib/eval-facts.nix).
    pub fstrim: crate::deploy_checklist::facts::Fstrim,
}

/// Evaluates the host, finds the kernel and tools, builds (or reuses) the image.
pub fn prepare(context: &toolbox::context::Context, options: &Options) -> Result<Prepared> {
    // Every tool the run needs, installed in one transaction when missing;
    // the code below only looks them up.
    let found = setup::ensure(context, &initramfs::tools_for_vm_test())?;
    let qemu = found.path(setup::QEMU)?.clone();
    let qemu_img = found.path(setup::QEMU_IMG)?.clone();
    let nix = Nix::locate(context)?;
    let host = hosts::find(&options.host)?;
    let loaded = crate::rules::load(&nix, &host, &host.layout_file)?;
    // Before the layout's errors: settings that would differ from the
    // server's stop the run even when the layout is fine.
    let rollback_settings = rollback_settings(&host, &loaded)?;
    let errors: Vec<String> = loaded
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{} {}: {}", f.code, f.path, f.message))
        .collect();
    let Some(mut layout) = loaded.layout else {
        bail!(
            "the layout of {} does not build: {}",
            host.name,
            errors.join("; ")
        );
    };
    if let Some(setting) = &options.compression {
        layout = with_compression(&layout, setting);
    }
    let mut disk_bytes = BTreeMap::new();
    for disk in &layout.disks {
        let bytes = match &options.disk_size {
            Some(given) => {
                parse_disk_size(given).with_context(|| format!("--disk-size {given:?}"))?
            }
            None => loaded.machine.disk_bytes(&disk.key)?.with_context(|| {
                format!(
                    "disk {:?} has no size: pass --disk-size or set diskSize in machine.nix",
                    disk.key
                )
            })?,
        };
        disk_bytes.insert(disk.key.clone(), bytes);
    }
    {
        let context = Model::new(&layout, &disk_bytes, hosts::firmware(&loaded.machine));
        let mut errors = errors;
        errors.extend(
            rules::run(&context)
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .map(|f| format!("{} {}: {}", f.code, f.path, f.message)),
        );
        if !errors.is_empty() {
            bail!(
                "`cargo xtask check` finds {} error(s) in {}; a VM of a layout that check rejects proves nothing:\n  {}",
                errors.len(),
                host.name,
                errors.join("\n  ")
            );
        }
    }
    let kernel = match kernel::discover(options.kernel.as_deref(), options.modules.as_deref()) {
        Ok(kernel) => kernel,
        // None anywhere: install Debian's cloud kernel when setup may install.
        Err(error) if options.kernel.is_none() && !setup::kernel_installed() => {
            setup::ensure_kernel(context).context(error)?;
            kernel::discover(None, None)?
        }
        Err(error) => return Err(error),
    };
    let index = Index::load(&kernel.modules)?;
    let resolved = index.resolve(modules::WANTED)?;
    let tools = initramfs::host_tools()?;
    let progress = toolbox::progress::Progress::shown_if(options.progress, "vm-test");
    let agent = agent::build(&progress)?;
    progress.finish_and_clear();
    let script = match &options.rollback_script {
        Some(given) => {
            anyhow::ensure!(
                given.is_file(),
                "--rollback-script {given}: no such file; give the path of a copy of nix/modules/btrfs-rollback/rollback.sh"
            );
            given.clone()
        }
        None => rollback_script(),
    };
    let image = initramfs::build(&initramfs::Inputs {
        tools: tools.clone(),
        agent,
        modules: resolved.modules,
        rollback_script: script.is_file().then_some(script),
        admin_programs: initramfs::admin_programs()?,
        cache_dir: xtask_dir().join("initramfs"),
    })?;
    let (accel, accel_reason) = accel::choose(&qemu, &kernel.image, options.accel)?;
    let (mut procedures, mut lab, fstrim) =
        checklist_procedures(&nix, &host, &layout, &loaded.machine)?;
    tamper_procedures(&mut procedures, &options.tamper)?;
    if options.tamper.contains(&Tamper::ServerWithoutHostPackages) {
        let nixos_only = crate::deploy_checklist::places::server_commands(&[]);
        lab.login
            .commands
            .insert(PLACE_SERVER.to_owned(), nixos_only.into_iter().collect());
    }
    Ok(Prepared {
        layout,
        machine: loaded.machine,
        disk_bytes,
        kernel,
        image,
        accel,
        accel_reason,
        qemu,
        qemu_img,
        tools,
        rollback_settings,
        procedures,
        lab,
        fstrim,
    })
}

/// `--tamper procedure-…`: a wrong copy of a checklist procedure, to prove
/// that vm-test fails on it, naming the step (tests only).
pub(super) fn tamper_procedures(all: &mut [Numbered], tamper: &[Tamper]) -> Result<()> {
    for t in tamper {
        if let Tamper::ProcedureFixedNames(id) = t {
            let Some(numbered) = all.iter_mut().find(|n| n.procedure.id == *id) else {
                bail!("--tamper {t}: the checklist has no procedure {id}");
            };
            let procedure = &mut numbered.procedure;
            procedure.commands.retain(|c| !c.line.contains("test ! -e"));
            for command in &mut procedure.commands {
                command.line = command.line.replace("<stamp>", "fixed");
                command.shows = command
                    .shows
                    .iter()
                    .map(|s| s.replace("<stamp>", "fixed"))
                    .collect();
            }
            continue;
        }
        if let Tamper::ProcedureStaleSave(id) = t {
            let Some(command) = all
                .iter_mut()
                .find(|n| n.procedure.id == *id)
                .and_then(|n| {
                    n.procedure
                        .commands
                        .iter_mut()
                        .find(|c| c.line.starts_with("btrfs subvolume snapshot -r "))
                })
            else {
                bail!("--tamper {t}: the checklist has no procedure {id} with a `btrfs subvolume snapshot -r` line");
            };
            // `btrfs subvolume snapshot -r SOURCE DEST`: SOURCE becomes the
            // oldest earlier save in DEST's directory, if there is one.
            let words: Vec<&str> = command.line.split_whitespace().collect();
            let (Some(source), Some(dest)) = (words.get(4), words.get(5)) else {
                bail!(
                    "--tamper {t}: `{}` is not `btrfs subvolume snapshot -r SOURCE DEST`",
                    command.line
                );
            };
            let (dir, name) = dest.rsplit_once('/').unwrap_or((".", dest));
            let prefix = name.split("<stamp>").next().unwrap_or(name);
            command.line = format!(
                "old=$(ls -d {dir}/{prefix}* 2>/dev/null | head -n 1); btrfs subvolume snapshot -r \"${{old:-{source}}}\" {dest}"
            );
            continue;
        }
        if let Tamper::ProcedureAlsoRuns { id, program } = t {
            let Some(command) = all
                .iter_mut()
                .find(|n| n.procedure.id == *id)
                .and_then(|n| n.procedure.commands.first_mut())
            else {
                bail!("--tamper {t}: the checklist has no procedure {id} with a command");
            };
            command.line = format!("{} && {program} --version >/dev/null", command.line);
            continue;
        }
        let (id, drop_sudo) = match t {
            Tamper::ProcedureExpect(id) => (id, false),
            Tamper::ProcedureDropSudo(id) => (id, true),
            _ => continue,
        };
        let Some(command) = all
            .iter_mut()
            .find(|n| n.procedure.id == *id)
            .and_then(|n| n.procedure.commands.first_mut())
        else {
            bail!("--tamper {t}: the checklist has no procedure {id} with a command");
        };
        if drop_sudo {
            command.line = command
                .line
                .strip_prefix("sudo ")
                .with_context(|| format!("--tamper {t}: `{}` has no sudo", command.line))?
                .to_owned();
        } else {
            command
                .expect
                .push(crate::deploy_checklist::procedures::Expect::Line {
                    pattern: "a line no command prints (vm-test --tamper)".to_owned(),
                });
        }
    }
    Ok(())
}

/// The checklist's server procedures for the host as it is booted (the
/// same `Subject` and facts the checklist prints them from), and the lab's
/// side of them: the admin's login, the disk's name in the VM.
pub(super) fn checklist_procedures(
    nix: &Nix,
    host: &hosts::Host,
    layout: &layout::Layout,
    machine: &hosts::Machine,
) -> Result<(
    Vec<Numbered>,
    procedure_runs::Lab,
    crate::deploy_checklist::facts::Fstrim,
)> {
    let facts = HostFacts::load(nix, &toolbox::project::project_root(), &host.dir)?;
    let subject =
        crate::hosts::Subject::new(&host.name, Vec::new(), layout.clone(), machine.clone())?;
    let all = crate::deploy_checklist::server_procedures(&subject, &facts);
    let names = crate::deploy_checklist::procedures::names(&subject.tables());
    let disk = layout
        .disks
        .first()
        .map(|d| (d.device.clone(), crate::vm::realise::GUEST_DISK.to_owned()))
        .filter(|(server, vm)| server != vm);
    // nixos/modules/misc/ids.nix: `users` (a normal user's group) is 100, `wheel` 1.
    let mut groups = vec![100];
    if facts.admin_groups.iter().any(|g| g == "wheel") {
        groups.push(crate::vm::plan::WHEEL_GID);
    }
    // The lab's PATH offers the admin exactly the server's (or the
    // workstation's) commands, as the configuration makes them.
    let places = crate::deploy_checklist::places::Places::for_host(&host.dir)?;
    let commands = [
        (PLACE_SERVER, &places.server),
        (PLACE_LOCAL, &places.workstation),
        (PLACE_RESCUE, &places.rescue),
    ]
    .into_iter()
    .map(|(place, set)| (place.to_owned(), set.iter().cloned().collect()))
    .collect();
    let login = AdminLogin {
        user: facts.admin_user.clone(),
        uid: facts.admin_uid.unwrap_or(1000),
        gid: 100,
        groups,
        home: facts.admin_home.clone(),
        commands,
    };
    Ok((
        all,
        procedure_runs::Lab {
            names,
            disk,
            login,
            lost: None,
            erased: crate::deploy_checklist::procedures::erased_by_reinstall(&subject)
                .into_iter()
                .map(|(_, mountpoint)| mountpoint)
                .collect(),
            root_subvolume: subject
                .tables()
                .filesystems
                .iter()
                .flat_map(|f| f.subvolumes.iter())
                .find(|s| s.mountpoint.as_deref() == Some("/"))
                .map(|s| s.name.clone())
                .context("the layout mounts no subvolume at /")?,
        },
        facts.fstrim,
    ))
}

/// The host's `boot.btrfsRollback`, from rollback.nix as `rules::load`
/// evaluated it, or the module's defaults when the host has no rollback.nix.
/// A rollback.nix that does not evaluate, or that check rejects (NIX002,
/// NIX004, HOST004), stops vm-test: booting with the defaults instead would
/// prove something about a server that is not ours.
pub fn rollback_settings(
    host: &hosts::Host,
    loaded: &crate::rules::Loaded,
) -> Result<RollbackSettings> {
    let Some(file) = &host.rollback_file else {
        return Ok(RollbackSettings {
            source: format!(
                "the module's defaults ({} has no {})",
                toolbox::project::display_path(&host.dir),
                hosts::ROLLBACK_FILE
            ),
            ..RollbackSettings::default()
        });
    };
    let source = toolbox::project::display_path(file);
    let refused: Vec<String> = loaded
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .filter(|f| {
            f.code == "HOST004"
                || f.location
                    .as_ref()
                    .is_some_and(|location| location.file == *file)
        })
        .map(|f| {
            let at = f
                .location
                .as_ref()
                .filter(|location| location.line > 0)
                .map(|location| format!(" ({source}:{}:{})", location.line, location.column))
                .unwrap_or_default();
            format!("{}{at}: {}", f.code, f.message)
        })
        .collect();
    if !refused.is_empty() {
        bail!(
            "{source} does not give the rollback's settings (`cargo xtask check` reports it); vm-test does not fall back to the module's defaults:\n  {}",
            refused.join("\n  ")
        );
    }
    let Some(value) = &loaded.rollback else {
        bail!(
            "{source} was not evaluated (the host's files do not evaluate: run `cargo xtask check`); vm-test does not fall back to the module's defaults"
        );
    };
    RollbackSettings::from_evaluation(value, &source)
}

/// The layout with every Btrfs mount's compression replaced by `setting`
/// (`zstd:3`, `lzo`, …; `none` removes it). Steps and expectations are both
/// made from the result, so the VM measures what that setting would do.
pub fn with_compression(layout: &layout::Layout, setting: &str) -> layout::Layout {
    use layout::{Content, DiskContent};
    let is_compress = |o: &String| {
        o.starts_with("compress=") || o.starts_with("compress-force=") || o == "compress"
    };
    // Btrfs mounts always get the setting; NixOS's extra options only lose theirs.
    let replace = |options: &mut Vec<String>, btrfs_mount: bool| {
        let had = options.iter().any(is_compress);
        options.retain(|o| !is_compress(o));
        if (had || btrfs_mount) && setting != "none" {
            options.insert(0, format!("compress={setting}"));
        }
    };
    let mut layout = layout.clone();
    for disk in &mut layout.disks {
        let contents: Vec<&mut Content> = match &mut disk.content {
            Some(DiskContent::Gpt(gpt)) => gpt
                .partitions
                .iter_mut()
                .filter_map(|p| p.content.as_mut())
                .collect(),
            Some(DiskContent::Whole(content)) => vec![content],
            None => Vec::new(),
        };
        for content in contents {
            if let Content::Btrfs(btrfs) = content {
                replace(&mut btrfs.mount_options, true);
                for subvolume in &mut btrfs.subvolumes {
                    replace(&mut subvolume.mount_options, true);
                }
            }
        }
    }
    for flags in layout.file_systems.values_mut() {
        if flags.options.iter().any(is_compress) {
            flags.options.retain(|o| !is_compress(o));
        }
    }
    layout
}

pub(super) fn describe_setup(
    prepared: &Prepared,
    options: &Options,
    disk_bytes: u64,
) -> Vec<(String, String)> {
    vec![
        ("host".to_owned(), prepared.layout.host.clone()),
        ("kernel".to_owned(), prepared.kernel.to_string()),
        (
            "accelerator".to_owned(),
            format!("{} ({})", prepared.accel, prepared.accel_reason),
        ),
        (
            "initramfs".to_owned(),
            format!(
                "{} ({} files, {:.1} MiB{})",
                toolbox::project::display_path(&prepared.image.path),
                prepared.image.files,
                prepared.image.bytes as f64 / 1048576.0,
                if prepared.image.reused {
                    ", cached"
                } else {
                    ", built"
                }
            ),
        ),
        (
            "disk".to_owned(),
            format!("{disk_bytes} bytes, sparse qcow2, virtio-blk discard=unmap"),
        ),
        (
            "vm".to_owned(),
            format!(
                "{} MiB, {} vCPUs, no network",
                options.memory_mib, options.cpus
            ),
        ),
        ("rollback".to_owned(), {
            let r = &prepared.rollback_settings;
            format!(
                "{} → {}, top level at {}, retention {} days, keep at least {} (from {}); script {}",
                r.root_subvolume,
                r.old_roots_subvolume,
                r.mount_point,
                r.retention_days,
                r.keep_at_least,
                r.source,
                prepared
                    .image
                    .rollback
                    .as_ref()
                    .map_or("none".to_owned(), |s| toolbox::project::display_path(&s.host_path))
            )
        }),
        (
            "boots".to_owned(),
            format!(
                "{}{}{}{}",
                options.boots,
                if options.boots >= MONTH_BOOT {
                    let month = month::month(Rules {
                        retention_days: prepared.rollback_settings.retention_days,
                        keep_at_least: prepared.rollback_settings.keep_at_least,
                    });
                    format!(
                        " (boot {MONTH_BOOT} is the month: the clock {} days on, {} more rotations, in one second and then on both sides of the retention and keepAtLeast boundaries, the last {} days later)",
                        month.jump_s / DAY,
                        month.extra_runs.len(),
                        month.stepped_s() / DAY
                    )
                } else {
                    String::new()
                },
                if options.power_cuts > 0 {
                    format!(", {} power cuts", options.power_cuts)
                } else {
                    String::new()
                },
                if options.thorough {
                    ", thorough: the checklist's procedures that reboot or reinstall (§3.9, §4.3-4.5) and a calendar of short boots"
                } else {
                    ""
                }
            ),
        ),
    ]
}
