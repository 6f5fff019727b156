//! The order the guest loads the package's modules in: names and plain aliases resolved as
//! modprobe does, `.modinfo` dependencies (`depends=`, `softdep=pre:`) walked first.

use std::path::Path;

use crate::kernel::{Kernel, Module};
use crate::{Error, Result};

/// The phase of load-order errors (the package's `.modinfo` names a module it does not hold).
const PHASE: &str = "module load order";

/// Finds a module by its modprobe name, else by a plain alias (preferring the portable
/// `<alias>_generic` implementation, e.g. crc32c_generic over crc32c-intel for `crc32c`).
pub fn find_module<'k>(kernel: &'k Kernel, name: &str) -> Option<&'k Module> {
    let norm = name.replace('-', "_");
    if let Some(m) = kernel.modules.iter().find(|m| m.name() == norm) {
        return Some(m);
    }
    let providers: Vec<&Module> = kernel
        .modules
        .iter()
        .filter(|m| m.aliases.iter().any(|a| a == name))
        .collect();
    let generic = format!("{norm}_generic");
    providers
        .iter()
        .find(|m| m.name() == generic)
        .or_else(|| providers.first())
        .copied()
}

impl Kernel {
    /// [`find_module`], as a method: `checks::guest` finds modules too, and may not import
    /// `guest` (which imports it).
    pub fn module(&self, name: &str) -> Option<&Module> {
        find_module(self, name)
    }
}

/// The order in which to load `wanted` and everything they need: for each module its
/// `softdep pre:` modules (if the package has them; absent softdeps are optional), then its
/// `depends=` (which must exist), then itself. Errors (bad input naming the package) name the
/// missing module.
pub fn load_order<'k>(kernel: &'k Kernel, wanted: &[String]) -> Result<Vec<&'k Module>> {
    // `.modinfo` is untrusted and can chain thousands of modules: names resolve through an
    // index built once (not a scan of the package per dependency), each module is walked
    // once, and the walk stops at a depth no real chain nears (each level is a stack frame).
    const MAX_DEPTH: usize = 256;
    struct Walk<'k> {
        file: &'k Path,
        modules: &'k [Module],
        names: std::collections::HashMap<String, usize>,
        aliases: std::collections::HashMap<&'k str, Vec<usize>>,
        done: Vec<bool>,
        out: Vec<&'k Module>,
        stack: Vec<String>,
    }
    impl<'k> Walk<'k> {
        /// What [`find_module`] finds.
        fn find(&self, name: &str) -> Option<usize> {
            let norm = name.replace('-', "_");
            if let Some(&i) = self.names.get(&norm) {
                return Some(i);
            }
            let providers = self.aliases.get(name)?;
            let generic = format!("{norm}_generic");
            providers
                .iter()
                .copied()
                .find(|&i| self.modules[i].name() == generic)
                .or_else(|| providers.first().copied())
        }
        fn visit(&mut self, name: &str, required_by: Option<&str>, soft: bool) -> Result<()> {
            let Some(i) = self.find(name) else {
                if soft {
                    return Ok(());
                }
                let msg = match required_by {
                    Some(by) => format!("module {name} (needed by {by}) is not in the package"),
                    None => format!("module {name} is not in the package"),
                };
                return Err(Error::bad(self.file, PHASE, msg));
            };
            if self.done[i] || self.stack.iter().any(|s| s == name) {
                return Ok(());
            }
            if self.stack.len() >= MAX_DEPTH {
                return Err(Error::bad(
                    self.file,
                    PHASE,
                    format!("module {name}: dependencies nest deeper than {MAX_DEPTH} modules"),
                ));
            }
            let modules = self.modules;
            let m = &modules[i];
            self.stack.push(name.to_string());
            for d in &m.softdep_pre {
                self.visit(d, Some(name), true)?;
            }
            for d in &m.depends {
                self.visit(d, Some(name), false)?;
            }
            self.stack.pop();
            self.done[i] = true;
            self.out.push(m);
            Ok(())
        }
    }
    let mut w = Walk {
        file: &kernel.primary().source,
        modules: &kernel.modules,
        names: std::collections::HashMap::new(),
        aliases: std::collections::HashMap::new(),
        done: vec![false; kernel.modules.len()],
        out: Vec::new(),
        stack: Vec::new(),
    };
    for (i, m) in kernel.modules.iter().enumerate() {
        w.names.entry(m.name()).or_insert(i);
        for a in &m.aliases {
            w.aliases.entry(a.as_str()).or_default().push(i);
        }
    }
    for name in wanted {
        w.stack.clear();
        w.visit(name, None, false)?;
    }
    Ok(w.out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::codec::Codec;
    use crate::kernel::Member;
    use crate::package::{Format, PackageMeta};

    fn module(name: &str, depends: &[&str], pre: &[&str], aliases: &[&str]) -> Module {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Module {
            package: 0,
            path: format!("lib/modules/6.1/kernel/{name}.ko").into(),
            codec: Codec::None,
            file_size: 0,
            elf_size: 0,
            btf_len: None,
            btf_nobits: false,
            debug: Vec::new(),
            error: None,
            base_fit: None,
            btf_cost: 0,
            packed_span: None,
            btf_sha256: None,
            depends: strings(depends),
            softdep_pre: strings(pre),
            aliases: strings(aliases),
        }
    }

    fn kernel(modules: Vec<Module>) -> Kernel {
        Kernel {
            packages: vec![Member {
                source: "pkg.apk".into(),
                read: Default::default(),
                format: Format::Apk,
                meta: PackageMeta::default(),
                container: None,
                module_dirs: Default::default(),
            }],
            release: Some("6.1".into()),
            module_dirs: Default::default(),
            config: None,
            image: None,
            modules,
        }
    }

    fn names(order: Result<Vec<&Module>>) -> String {
        let o = order.unwrap();
        o.iter().map(|m| m.name()).collect::<Vec<_>>().join(" ")
    }

    /// Soft dependencies first (when present), then hard ones, then the module; aliases
    /// resolve to the `_generic` implementation; each module once.
    #[test]
    fn dependencies_load_first_and_once() {
        let k = kernel(vec![
            module("crc32c-intel", &[], &[], &["crc32c"]),
            module("crc32c_generic", &[], &[], &["crc32c"]),
            module("libcrc32c", &[], &["crc32c", "absent"], &[]),
            module("btrfs", &["libcrc32c"], &[], &[]),
            module("overlay", &["btrfs"], &[], &[]),
        ]);
        assert_eq!(
            find_module(&k, "crc32c").map(|m| m.name()).as_deref(),
            Some("crc32c_generic")
        );
        assert_eq!(
            k.module("crc32c-intel").map(|m| m.name()).as_deref(),
            Some("crc32c_intel")
        );
        let want = ["overlay".to_string(), "btrfs".to_string()];
        assert_eq!(
            names(load_order(&k, &want)),
            "crc32c_generic libcrc32c btrfs overlay"
        );
    }

    /// A missing hard dependency is bad input naming the package and the module needing it.
    #[test]
    fn a_missing_dependency_names_who_needs_it() {
        let k = kernel(vec![module("a", &["ghost"], &[], &[])]);
        let e = load_order(&k, &["a".to_string()]).unwrap_err();
        assert_eq!(
            e.message(),
            "module ghost (needed by a) is not in the package"
        );
        assert_eq!(
            e.to_string(),
            "pkg.apk: module load order: module ghost (needed by a) is not in the package"
        );
        let e = load_order(&k, &["b".to_string()]).unwrap_err();
        assert_eq!(e.message(), "module b is not in the package");
    }
}
