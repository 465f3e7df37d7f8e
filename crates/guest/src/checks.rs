//! The in-VM checks: each measures one thing the plan expects and reports
//! it as a named check with the measured and the expected value.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};

use crate::generate::Random;
use crate::parse;
use crate::port::{send, uptime_ms};
use crate::program::{run_ok, run_program};
use crate::report::{figure, report, with_top_level};
use lab_protocol::plan::{Check, Expect, ExpectedPartition, GuestTools, Plan};
use lab_protocol::protocol::Event;

/// Runs one check; a check that cannot measure fails with the reason.
pub fn run(plan: &Plan, check: &Check) {
    if let Err(error) = measure(plan, check) {
        report(
            &check.name,
            false,
            format!("could not measure: {error:#}"),
            describe(&check.expect),
        );
    }
}

fn describe(expect: &Expect) -> String {
    serde_json::to_string(expect).unwrap_or_default()
}

fn measure(plan: &Plan, check: &Check) -> Result<()> {
    let name = check.name.as_str();
    let tools = &plan.tools;
    match &check.expect {
        Expect::PartitionTable { disk, partitions } => {
            partition_table(plan, name, disk, partitions)
        }
        Expect::Subvolumes { device, names } => subvolumes(plan, name, device, names),
        Expect::MountOptions {
            mountpoint,
            fs_type,
            options,
        } => mount_options(name, mountpoint, fs_type, options),
        Expect::Permissions {
            directory,
            directory_mode,
            file_mode,
        } => permissions(name, directory, directory_mode, file_mode),
        Expect::SwapEncrypted {
            mapper,
            device,
            cipher,
            sectors,
        } => swap_encrypted(tools, name, mapper, device, cipher, sectors),
        Expect::SwapFreshKey { mapper } => swap_fresh_key(tools, name, mapper),
        Expect::Compression {
            path,
            subvolume,
            algorithm,
            min_saving_percent,
        } => compression(tools, name, path, subvolume, algorithm, min_saving_percent),
        Expect::NoCow { directory } => no_cow(tools, name, directory),
        Expect::Fstrim {
            mountpoint,
            min_bytes,
        } => fstrim(tools, name, mountpoint, min_bytes),
        Expect::FstrimService {
            args,
            mountpoint,
            triggers,
        } => fstrim_service(tools, name, args, mountpoint, triggers),
        Expect::AsyncDiscard { mountpoint } => async_discard(name, mountpoint),
        Expect::Absent { paths } => absent(name, paths),
        Expect::Digest { path, sha256 } => digest(name, path, sha256),
        Expect::OldRoots {
            device,
            directory,
            min_count,
            max_count,
            newest_holds,
            some_holds,
        } => old_roots(
            plan,
            name,
            device,
            directory,
            (*min_count, *max_count),
            newest_holds,
            some_holds,
        ),
        Expect::Clock { rtc_base, slack_s } => clock(name, *rtc_base, *slack_s),
        Expect::DiscardLatency {
            min_released_bytes,
            max_wait_ms,
            p99_budget_ms,
            max_budget_ms,
        } => crate::discard::finish(
            name,
            *min_released_bytes,
            *max_wait_ms,
            *p99_budget_ms,
            *max_budget_ms,
        ),
        Expect::FreshRoot { path, allowed } => fresh_root(name, path, allowed),
    }
}

/// The top level holds exactly the expected subvolumes, each once.
fn subvolumes(plan: &Plan, name: &str, device: &str, names: &[String]) -> Result<()> {
    let tools = &plan.tools;
    let listed = with_top_level(plan, device, |top| {
        let ran = run_ok(&[
            tools.btrfs.clone(),
            "subvolume".into(),
            "list".into(),
            top.into(),
        ])?;
        Ok(parse::subvolume_list(&ran.stdout))
    })?;
    let top: Vec<&str> = listed
        .iter()
        .filter(|(_, parent, _)| *parent == 5)
        .map(|(_, _, path)| path.as_str())
        .collect();
    let measured: BTreeSet<&str> = top.iter().copied().collect();
    let expected: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let once = measured.len() == top.len();
    let missing: Vec<&str> = expected.difference(&measured).copied().collect();
    let extra: Vec<&str> = measured.difference(&expected).copied().collect();
    let mut text = format!("{} at the top level: {}", top.len(), top.join(" "));
    if !missing.is_empty() {
        text.push_str(&format!("; missing {}", missing.join(" ")));
    }
    if !extra.is_empty() {
        text.push_str(&format!("; unexpected {}", extra.join(" ")));
    }
    report(
        name,
        missing.is_empty() && extra.is_empty() && once,
        text,
        format!("exactly {} once each: {}", names.len(), names.join(" ")),
    );
    Ok(())
}

/// The mount shows every expected option, as the kernel prints it.
fn mount_options(name: &str, mountpoint: &str, fs_type: &str, options: &[String]) -> Result<()> {
    let mounts = parse::proc_mounts(&std::fs::read_to_string("/proc/self/mounts")?);
    let Some(entry) = mounts.iter().rev().find(|m| m.mountpoint == mountpoint) else {
        report(
            name,
            false,
            format!("{mountpoint} is not mounted"),
            options.join(","),
        );
        return Ok(());
    };
    let missing: Vec<&String> = options
        .iter()
        .filter(|o| !entry.options.contains(o))
        .collect();
    let type_ok = entry.fs_type == fs_type;
    let mut measured = format!("{} {}", entry.fs_type, entry.options.join(","));
    if !missing.is_empty() {
        measured.push_str(&format!(
            " (missing {})",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    report(
        name,
        type_ok && missing.is_empty(),
        measured,
        format!("{fs_type} with {}", options.join(",")),
    );
    Ok(())
}

/// New directories and files get the modes the mount options give.
fn permissions(name: &str, directory: &str, directory_mode: &u32, file_mode: &u32) -> Result<()> {
    let probe = Path::new(directory).join("xtask-permissions-probe");
    let _ = std::fs::remove_dir_all(&probe);
    std::fs::create_dir(&probe).with_context(|| format!("creating {}", probe.display()))?;
    let file = probe.join("file");
    std::fs::write(&file, b"probe").context("creating a file on the ESP")?;
    let dir_mode = std::fs::metadata(&probe)?.permissions().mode() & 0o7777;
    let f_mode = std::fs::metadata(&file)?.permissions().mode() & 0o7777;
    std::fs::remove_dir_all(&probe)?;
    let private = dir_mode & 0o077 == 0 && f_mode & 0o077 == 0;
    report(
        name,
        dir_mode == *directory_mode && f_mode == *file_mode && private,
        format!("directories {dir_mode:04o}, files {f_mode:04o}"),
        format!("directories {directory_mode:04o}, files {file_mode:04o} (as the mount options say); nothing for group or others"),
    );
    Ok(())
}

/// Swap is a plain dm-crypt mapping of the device, in use.
fn swap_encrypted(
    tools: &GuestTools,
    name: &str,
    mapper: &str,
    device: &str,
    cipher: &str,
    sectors: &u64,
) -> Result<()> {
    let mapping = mapper.rsplit('/').next().unwrap_or(mapper);
    let ran = run_program(
        &[tools.cryptsetup.clone(), "status".into(), mapping.into()],
        &BTreeMap::new(),
    )?;
    let status = parse::colon_fields(&ran.stdout);
    let get = |k: &str| status.get(k).map(String::as_str).unwrap_or("?");
    let real_device = std::fs::canonicalize(device)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| device.to_owned());
    let size: u64 = get("size")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mapper_rdev = std::fs::metadata(mapper).map(|m| m.rdev()).ok();
    let swaps = parse::proc_swaps(&std::fs::read_to_string("/proc/swaps")?);
    let in_use = swaps.iter().find(|(file, _)| {
        std::fs::metadata(file).ok().map(|m| m.rdev()) == mapper_rdev
            && mapper_rdev.is_some()
            && std::fs::metadata(file).is_ok_and(|m| m.file_type().is_block_device())
    });
    let passed = ran.ok()
        && get("type") == "PLAIN"
        && get("cipher") == cipher
        && get("device") == real_device
        && size == *sectors
        && in_use.is_some();
    if let Some((_, kib)) = in_use {
        figure("swap.bytes".into(), (*kib * 1024) as f64);
    }
    report(
        name,
        passed,
        format!(
            "{} {} {} key on {}, {} sectors; /proc/swaps: {}",
            get("type"),
            get("cipher"),
            get("keysize"),
            get("device"),
            size,
            in_use.map_or("not in use".to_owned(), |(f, k)| format!("{f} {k} KiB"))
        ),
        format!("PLAIN {cipher} on {real_device}, {sectors} sectors, in use as swap"),
    );
    Ok(())
}

/// The mapping shows no swap signature: a fresh key.
fn swap_fresh_key(tools: &GuestTools, name: &str, mapper: &str) -> Result<()> {
    let ran = run_program(
        &[
            tools.blkid.clone(),
            "-p".into(),
            "-o".into(),
            "export".into(),
            mapper.to_owned(),
        ],
        &BTreeMap::new(),
    )?;
    let found = parse::key_values(&ran.stdout);
    let signature = found.get("TYPE").cloned();
    report(
        name,
        signature.is_none(),
        signature.map_or(
            "no signature: the last boot's swap reads as noise".to_owned(),
            |t| format!("a {t} signature: the key is the last boot's"),
        ),
        "no signature through a fresh random key",
    );
    Ok(())
}

/// compsize: the algorithm in use and the saving.
fn compression(
    tools: &GuestTools,
    name: &str,
    path: &str,
    subvolume: &str,
    algorithm: &Option<String>,
    min_saving_percent: &Option<f64>,
) -> Result<()> {
    let ran = run_program(
        &[
            tools.compsize.clone(),
            "-b".into(),
            "-x".into(),
            path.to_owned(),
        ],
        &BTreeMap::new(),
    )?;
    let Some(sizes) = parse::compsize(&ran.stdout) else {
        report(
            name,
            false,
            format!("compsize found no data: {}", ran.describe()),
            "data to measure",
        );
        return Ok(());
    };
    let saving = sizes.saving_percent();
    figure(
        format!("compression.{subvolume}.percent"),
        (saving * 10.0).round() / 10.0,
    );
    figure(
        format!("compression.{subvolume}.disk_bytes"),
        sizes.disk_bytes as f64,
    );
    figure(
        format!("compression.{subvolume}.uncompressed_bytes"),
        sizes.uncompressed_bytes as f64,
    );
    let types = sizes.compressed_types();
    let measured = format!(
        "{saving:.1}% saved ({} of {} bytes on disk), types: {}",
        sizes.disk_bytes,
        sizes.uncompressed_bytes,
        sizes.types.keys().cloned().collect::<Vec<_>>().join(",")
    );
    let (passed, expected) = match algorithm {
        Some(algorithm) => {
            let minimum = min_saving_percent.unwrap_or(0.0);
            (
                types.contains(&algorithm.as_str()) && saving > minimum,
                format!("{algorithm} in use, more than {minimum}% saved"),
            )
        }
        None => (types.is_empty(), "stored uncompressed (No_COW)".to_owned()),
    };
    report(name, passed, measured, expected);
    Ok(())
}

/// A new file gets No_COW and is stored uncompressed.
fn no_cow(tools: &GuestTools, name: &str, directory: &str) -> Result<()> {
    let probe = Path::new(directory).join("xtask-nocow-probe");
    let mut text = Vec::new();
    Random::new(99).fill_log(&mut text, 1 << 20);
    std::fs::write(&probe, &text).with_context(|| format!("writing {}", probe.display()))?;
    std::fs::File::open(&probe)?.sync_all()?;
    let probe_path = probe.display().to_string();
    let flags = run_ok(&[tools.lsattr.clone(), probe_path.clone()])
        .map(|r| parse::lsattr_flags(&r.stdout).unwrap_or_default())?;
    let sizes = run_program(
        &[tools.compsize.clone(), "-b".into(), probe_path],
        &BTreeMap::new(),
    )
    .ok()
    .and_then(|r| parse::compsize(&r.stdout));
    let compressed = sizes
        .as_ref()
        .map(|s| s.compressed_types().join(","))
        .unwrap_or_default();
    std::fs::remove_file(&probe)?;
    report(
        name,
        flags.contains('C') && compressed.is_empty(),
        format!(
            "lsattr {flags}; {}",
            if compressed.is_empty() {
                "stored uncompressed".to_owned()
            } else {
                format!("compressed with {compressed}")
            }
        ),
        "C (No_COW) on a new file, stored uncompressed",
    );
    Ok(())
}

/// fstrim discards at least the minimum.
fn fstrim(tools: &GuestTools, name: &str, mountpoint: &str, min_bytes: &u64) -> Result<()> {
    let started = Instant::now();
    let ran = run_program(
        &[tools.fstrim.clone(), "-v".into(), mountpoint.to_owned()],
        &BTreeMap::new(),
    )?;
    let ms = started.elapsed().as_millis();
    let trimmed = parse::fstrim_bytes(&ran.stdout);
    let figure_name = if *min_bytes == 0 {
        "trim.fstrim_after_delete_bytes"
    } else {
        "trim.fstrim_bytes"
    };
    if let Some(bytes) = trimmed {
        figure(figure_name.into(), bytes as f64);
    }
    report(
        name,
        ran.ok() && trimmed.is_some_and(|b| b >= *min_bytes),
        match trimmed {
            Some(bytes) => format!("{bytes} bytes trimmed in {ms} ms"),
            None => format!("fstrim: {}", ran.describe()),
        },
        format!("exit 0, at least {min_bytes} bytes trimmed"),
    );
    Ok(())
}

/// fstrim.service's command trims the mountpoint.
fn fstrim_service(
    tools: &GuestTools,
    name: &str,
    args: &[String],
    mountpoint: &str,
    triggers: &[String],
) -> Result<()> {
    let started = Instant::now();
    let mut argv = vec![tools.fstrim.clone()];
    argv.extend(args.iter().cloned());
    let ran = run_program(&argv, &BTreeMap::new())?;
    let ms = started.elapsed().as_millis();
    let lines = parse::fstrim_lines(&ran.stdout);
    let total: u64 = lines.iter().map(|(_, bytes)| bytes).sum();
    let root = lines.iter().find(|(m, _)| m == mountpoint);
    figure("trim.after_boot_bytes".into(), total as f64);
    figure("trim.after_boot_ms".into(), ms as f64);
    let listed: Vec<String> = lines
        .iter()
        .map(|(m, bytes)| format!("{m} {bytes} bytes"))
        .collect();
    report(
        name,
        ran.ok() && root.is_some(),
        if ran.ok() {
            format!(
                "fstrim.service's command ({}): {} in {ms} ms",
                triggers.join("; "),
                listed.join(", ")
            )
        } else {
            format!("fstrim: {}", ran.describe())
        },
        format!("exit 0, {mountpoint} trimmed"),
    );
    Ok(())
}

/// Freed extents are queued for asynchronous discard.
fn async_discard(name: &str, mountpoint: &str) -> Result<()> {
    let mounts = parse::proc_mounts(&std::fs::read_to_string("/proc/self/mounts")?);
    let option = mounts
        .iter()
        .rev()
        .find(|m| m.mountpoint == mountpoint)
        .is_some_and(|m| m.options.iter().any(|o| o == "discard=async"));
    // /sys/fs/btrfs/<fsid>/discard/ counts what waits for the async discard worker.
    let mut queued = None;
    for entry in std::fs::read_dir("/sys/fs/btrfs")?.flatten() {
        let dir = entry.path().join("discard");
        if let Ok(text) = std::fs::read_to_string(dir.join("discardable_bytes")) {
            let bytes: u64 = text.trim().parse().unwrap_or(0);
            let extents: u64 = std::fs::read_to_string(dir.join("discardable_extents"))
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            queued = Some((bytes, extents));
        }
    }
    if let Some((bytes, _)) = queued {
        figure("trim.async_discardable_bytes".into(), bytes as f64);
    }
    let passed = option && queued.is_none_or(|(bytes, extents)| bytes > 0 || extents > 0);
    report(
        name,
        passed,
        format!(
            "discard=async {}; {}",
            if option {
                "in /proc/mounts"
            } else {
                "NOT in /proc/mounts"
            },
            queued.map_or("no discard counters in sysfs".to_owned(), |(b, e)| format!(
                "{e} extents ({b} bytes) queued after the delete"
            ))
        ),
        "discard=async in effect, freed extents queued for discard",
    );
    Ok(())
}

/// None of the paths exist.
fn absent(name: &str, paths: &[String]) -> Result<()> {
    let present: Vec<&String> = paths.iter().filter(|p| Path::new(p).exists()).collect();
    report(
        name,
        present.is_empty(),
        if present.is_empty() {
            format!("none of {} files from earlier boots", paths.len())
        } else {
            format!(
                "still there: {}",
                present
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        },
        format!(
            "none of {} files written into / by earlier boots",
            paths.len()
        ),
    );
    Ok(())
}

/// The file holds exactly the expected bytes.
fn digest(name: &str, path: &str, sha256: &str) -> Result<()> {
    let measured = match std::fs::read(path) {
        Ok(bytes) => lab_protocol::hex(&Sha256::digest(&bytes)),
        Err(error) => format!("unreadable: {error}"),
    };
    report(
        name,
        measured == sha256,
        format!("sha256 {measured}"),
        format!("sha256 {sha256}"),
    );
    Ok(())
}

/// The old roots: their number, names, and what the newest and some old root hold.
fn old_roots(
    plan: &Plan,
    name: &str,
    device: &str,
    directory: &str,
    counts: (u32, u32),
    newest_holds: &[String],
    some_holds: &[String],
) -> Result<()> {
    let (min_count, max_count) = (&counts.0, &counts.1);
    let (names, all_subvolumes, newest_missing, some_missing) =
        with_top_level(plan, device, |top| {
            let names = crate::rollback::list_old_roots(top, directory)?;
            let dir = Path::new(top).join(directory);
            // A subvolume's root directory is inode 256.
            let all_subvolumes = names
                .iter()
                .all(|n| std::fs::metadata(dir.join(n)).is_ok_and(|m| m.ino() == 256));
            let newest_missing: Vec<String> = match names.last() {
                Some(newest) => newest_holds
                    .iter()
                    .filter(|p| !dir.join(newest).join(p).exists())
                    .cloned()
                    .collect(),
                None => newest_holds.to_vec(),
            };
            let some_missing: Vec<String> = some_holds
                .iter()
                .filter(|p| !names.iter().any(|n| dir.join(n).join(p).exists()))
                .cloned()
                .collect();
            Ok((names, all_subvolumes, newest_missing, some_missing))
        })?;
    send(&Event::Data {
        name: "old_roots".into(),
        value: serde_json::json!(names),
    });
    let well_named = names.iter().all(|n| parse::is_old_root_name(n));
    let count = names.len() as u32;
    let passed = (*min_count..=*max_count).contains(&count)
        && well_named
        && all_subvolumes
        && newest_missing.is_empty()
        && some_missing.is_empty();
    let mut measured = format!("{} old roots: {}", names.len(), names.join(" "));
    if !well_named {
        measured.push_str("; some not named YYYYMMDDTHHMMSSZ[-NN]");
    }
    if !all_subvolumes {
        measured.push_str("; some are not subvolumes");
    }
    if !newest_missing.is_empty() {
        measured.push_str(&format!("; the newest lacks {}", newest_missing.join(" ")));
    }
    if !some_missing.is_empty() {
        measured.push_str(&format!("; no old root holds {}", some_missing.join(" ")));
    }
    let counted = if min_count == max_count {
        format!("{min_count}")
    } else {
        format!("{min_count} to {max_count}")
    };
    let mut expected = format!("{counted} subvolumes named YYYYMMDDTHHMMSSZ[-NN]");
    if !newest_holds.is_empty() {
        expected.push_str(&format!(
            "; the newest holds the last boot's root ({})",
            newest_holds.join(" ")
        ));
    }
    if !some_holds.is_empty() {
        expected.push_str(&format!(
            "; one holds the last completed boot's root ({})",
            some_holds.join(" ")
        ));
    }
    report(name, passed, measured, expected);
    Ok(())
}

/// / holds nothing but the mountpoints' directories.
fn fresh_root(name: &str, path: &str, allowed: &[String]) -> Result<()> {
    let mut found: Vec<String> = std::fs::read_dir(path)
        .with_context(|| format!("listing {path}"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let unexpected: Vec<&String> = found.iter().filter(|n| !allowed.contains(n)).collect();
    report(
        name,
        unexpected.is_empty(),
        if unexpected.is_empty() {
            format!("/ holds only {}", found.join(" "))
        } else {
            format!(
                "/ also holds {}",
                unexpected
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        },
        format!(
            "nothing but the mountpoints' directories ({})",
            allowed.join(" ")
        ),
    );
    Ok(())
}

fn partition_table(
    plan: &Plan,
    name: &str,
    disk: &str,
    expected: &[ExpectedPartition],
) -> Result<()> {
    let ran = run_ok(&[plan.tools.sgdisk.clone(), "-p".into(), disk.into()])?;
    let rows = parse::sgdisk_print(&ran.stdout);
    let disk_name = disk.rsplit('/').next().unwrap_or(disk);
    let mut measured = Vec::new();
    let mut passed = rows.len() == expected.len();
    for row in &rows {
        // The kernel's view too: what the partitions really are after the re-read.
        let sysfs = |field: &str| -> Option<u64> {
            std::fs::read_to_string(format!(
                "/sys/class/block/{disk_name}{}/{field}",
                row.number
            ))
            .ok()?
            .trim()
            .parse()
            .ok()
        };
        let kernel_agrees =
            sysfs("start") == Some(row.start) && sysfs("size") == Some(row.end - row.start + 1);
        measured.push(format!(
            "{}:{}-{} {} {}{}",
            row.number,
            row.start,
            row.end,
            row.code,
            row.name,
            if kernel_agrees {
                ""
            } else {
                " (kernel differs)"
            }
        ));
        let matches = expected.iter().any(|e| {
            e.number == row.number
                && e.start_sector == row.start
                && e.end_sector == row.end
                && e.label == row.name
                && (e.type_code.eq_ignore_ascii_case(&row.code) || e.type_code.len() > 4)
        });
        passed &= matches && kernel_agrees;
    }
    // GUID type codes are not printed by `sgdisk -p`: compare them with `sgdisk -i`.
    for e in expected.iter().filter(|e| e.type_code.len() > 4) {
        let info = run_ok(&[
            plan.tools.sgdisk.clone(),
            format!("--info={}", e.number),
            disk.into(),
        ])?;
        passed &= info
            .stdout
            .to_ascii_uppercase()
            .contains(&e.type_code.to_ascii_uppercase());
    }
    let expected_text: Vec<String> = expected
        .iter()
        .map(|e| {
            format!(
                "{}:{}-{} {} {}",
                e.number, e.start_sector, e.end_sector, e.type_code, e.label
            )
        })
        .collect();
    report(name, passed, measured.join("; "), expected_text.join("; "));
    Ok(())
}

/// The guest's wall clock against the RTC qemu started with.
pub fn clock(name: &str, rtc_base: i64, slack_s: u64) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs() as i64;
    let uptime_s = uptime_ms() as i64 / 1000;
    let ahead = now - rtc_base;
    let limit = uptime_s + slack_s as i64;
    let show = |epoch: i64| lab_protocol::stamp::Stamp { epoch, suffix: 0 }.name();
    report(
        name,
        (0..=limit).contains(&ahead),
        format!(
            "{} ({ahead} s after the RTC base, {uptime_s} s after the kernel started)",
            show(now)
        ),
        format!(
            "the RTC base {} (qemu -rtc base=) plus at most the time since boot and {slack_s} s",
            show(rtc_base)
        ),
    );
    Ok(())
}
