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
        file: &kernel.source,
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

