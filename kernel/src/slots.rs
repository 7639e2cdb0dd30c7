//! Work folders for running kernels: Evcxr's crate, its `target/` with the whetstone tree compiled, and a lock.
//!
//! Evcxr compiles each cell as a crate in a temporary folder; by default a new one per kernel, so every start
//! recompiles the whole dependency tree (minutes), and its own compile cache does not help: the cached rustc
//! outputs name build-script files of the folder they were made in, so cargo finds them stale in the next one
//! and rebuilds on every cell. A kernel here runs in a kept folder (`EVCXR_TMPDIR`) instead: `slot-N` under the
//! kernel's `work/`, the first one no running kernel holds, so two notebooks open at once get two. A slot
//! without compiled outputs starts as a copy of `template/`, which `install --warm` compiles and no kernel
//! runs in (a copy of about a gigabyte takes about a second; a slot some kernel is using could change under it).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A slot held by this process (and, once exec'd, by the kernel): the lock lasts as long as the file is open.
#[derive(Debug)]
pub struct Slot {
    pub dir: PathBuf,
    pub index: usize,
    pub lock: File,
    /// Whether it had compiled outputs already, or was seeded with the template's.
    pub warm: bool,
}

const LOCK_FILE: &str = ".whetstone-slot.lock";

/// The folder `install --warm` compiles the whetstone tree in, for slots to copy.
pub fn template_dir(work: &Path) -> PathBuf {
    work.join("template")
}

fn slot_dir(work: &Path, index: usize) -> PathBuf {
    work.join(format!("slot-{index}"))
}

fn lock_file(dir: &Path) -> Result<File> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create it", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("{}: cannot open it", path.display()))
}

/// Locks `dir` if no other process holds it.
fn try_lock(dir: &Path) -> Result<Option<File>> {
    let file = lock_file(dir)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("{}: cannot lock it", dir.display())),
    }
}

/// Locks `dir`, waiting for whoever holds it (the template, while `install --warm` compiles it).
pub fn lock(dir: &Path) -> Result<File> {
    let file = lock_file(dir)?;
    file.lock().with_context(|| format!("{}: cannot lock it", dir.display()))?;
    Ok(file)
}

pub fn is_compiled(dir: &Path) -> bool {
    dir.join("target").is_dir()
}

/// The first free slot under `work`, locked; seeded from the template when it has no compiled outputs yet.
/// `on_seed` hears of the copy before it starts.
pub fn acquire(work: &Path, on_seed: impl FnOnce(&Path, &Path)) -> Result<Slot> {
    let mut index = 0;
    let held = loop {
        if let Some(held) = try_lock(&slot_dir(work, index))? {
            break held;
        }
        index += 1;
    };
    let dir = slot_dir(work, index);
    let template = template_dir(work);
    let mut warm = is_compiled(&dir);
    if !warm && template.is_dir() {
        let _template_lock = lock(&template)?;
        if is_compiled(&template) {
            on_seed(&template, &dir);
            let partial = dir.join("target.partial");
            if partial.exists() {
                std::fs::remove_dir_all(&partial)?;
            }
            copy_tree(&template.join("target"), &partial)?;
            std::fs::rename(&partial, dir.join("target"))?;
            if let Ok(lockfile) = std::fs::read(template.join("Cargo.lock")) {
                std::fs::write(dir.join("Cargo.lock"), lockfile)?;
            }
            warm = true;
        }
    }
    Ok(Slot { dir, index, lock: held, warm })
}

/// Removes the compiled outputs of every slot no kernel holds, so each is seeded again from a freshly compiled
/// template at its next start (rather than recompiling what changed in its own start); returns how many.
pub fn reset_idle(work: &Path) -> Result<usize> {
    let mut reset = 0;
    let mut index = 0;
    while slot_dir(work, index).is_dir() {
        let dir = slot_dir(work, index);
        if is_compiled(&dir) {
            if let Some(_held) = try_lock(&dir)? {
                std::fs::remove_dir_all(dir.join("target"))
                    .with_context(|| format!("{}: cannot remove it", dir.join("target").display()))?;
                reset += 1;
            }
        }
        index += 1;
    }
    Ok(reset)
}

/// Copies a folder, keeping modification times (cargo compares them to decide what is fresh).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("{}: cannot create it", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("{}: cannot read it", from.display()))? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else if kind.is_symlink() {
            #[cfg(unix)]
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else {
            std::fs::copy(&source, &target)
                .with_context(|| format!("{} → {}: cannot copy it", source.display(), target.display()))?;
            let modified = entry.metadata()?.modified()?;
            File::options().write(true).open(&target)?.set_modified(modified)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_slot_sends_the_next_kernel_to_the_next_one_seeded_from_the_template() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        let first = acquire(&work, |_, _| panic!("no template to seed from")).unwrap();
        assert_eq!((first.index, first.warm), (0, false));
        let second = acquire(&work, |_, _| panic!("no template")).unwrap();
        assert_eq!((second.index, second.warm), (1, false), "slot 0 is held");
        drop(second);

        // A compiled template, with an old modification time on its outputs.
        let deps = template_dir(&work).join("target/debug/deps");
        std::fs::create_dir_all(&deps).unwrap();
        std::fs::write(deps.join("libwhetstone.rlib"), b"rlib").unwrap();
        std::fs::write(template_dir(&work).join("Cargo.lock"), b"# lock").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        File::options().write(true).open(deps.join("libwhetstone.rlib")).unwrap().set_modified(old).unwrap();

        let mut seeded = None;
        let third = acquire(&work, |from, to| seeded = Some((from.to_path_buf(), to.to_path_buf()))).unwrap();
        assert_eq!((third.index, third.warm), (1, true));
        assert_eq!(seeded, Some((template_dir(&work), slot_dir(&work, 1))));
        let copied = third.dir.join("target/debug/deps/libwhetstone.rlib");
        assert_eq!(std::fs::metadata(&copied).unwrap().modified().unwrap(), old);
        assert_eq!(std::fs::read(third.dir.join("Cargo.lock")).unwrap(), b"# lock");
        assert!(!third.dir.join("target.partial").exists());

        // Released, slot 1 stays compiled: taken again with no copy.
        drop(third);
        let held_1 = try_lock(&slot_dir(&work, 1)).unwrap();
        assert!(held_1.is_some(), "released when dropped");
        drop(held_1);
        let fourth = acquire(&work, |_, _| panic!("slot 1 is compiled: nothing to copy")).unwrap();
        assert_eq!((fourth.index, fourth.warm), (1, true));
        drop(first);
        let fifth = acquire(&work, |_, _| {}).unwrap();
        assert_eq!((fifth.index, fifth.warm), (0, true), "slot 0, free again, is seeded now");
    }

    #[test]
    fn resetting_leaves_held_slots_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        let held = acquire(&work, |_, _| {}).unwrap();
        let idle = acquire(&work, |_, _| {}).unwrap();
        for s in [&held, &idle] {
            std::fs::create_dir_all(s.dir.join("target/debug")).unwrap();
        }
        drop(idle);
        assert_eq!(reset_idle(&work).unwrap(), 1);
        assert!(is_compiled(&slot_dir(&work, 0)) && !is_compiled(&slot_dir(&work, 1)));
    }

    #[test]
    fn copies_keep_modification_times() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("a");
        std::fs::create_dir_all(from.join("x/y")).unwrap();
        std::fs::write(from.join("x/y/f"), b"data").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        File::options().write(true).open(from.join("x/y/f")).unwrap().set_modified(old).unwrap();
        copy_tree(&from, &tmp.path().join("b")).unwrap();
        let copied = tmp.path().join("b/x/y/f");
        assert_eq!(std::fs::read(&copied).unwrap(), b"data");
        assert_eq!(std::fs::metadata(&copied).unwrap().modified().unwrap(), old);
    }
}
