//! What to install when a module has no symbols: its Debian `-dbgsym` package.
use std::path::Path;
use std::process::Command;

/// Why a module's addresses have no function, and what would fix it:
/// `no symbols in /usr/bin/redis-server (install redis-server-dbgsym from the debian-debug
/// archive)`. The owning package comes from dpkg's database (`dpkg-query -S`), which knows the
/// path as the package shipped it: on a merged-/usr system `/usr/lib/…` may be recorded as
/// `/lib/…`, so both are asked.
pub fn missing_symbols(module: &str) -> String {
    match owning_package(module) {
        Some(package) => format!(
            "no symbols in {module} (install {package}-dbgsym from the debian-debug archive)"
        ),
        None => format!(
            "no symbols in {module} (stripped and not from a Debian package: rebuild it with -g, \
             or keep its debug file under /usr/lib/debug/.build-id)"
        ),
    }
}

fn owning_package(module: &str) -> Option<String> {
    let mut candidates = vec![module.to_owned()];
    if let Some(rest) = module.strip_prefix("/usr") {
        candidates.push(rest.to_owned());
    } else if module.starts_with('/') {
        candidates.push(format!("/usr{module}"));
    }
    candidates
        .iter()
        .filter(|path| Path::new(path).is_absolute())
        .find_map(|path| query_dpkg(path))
}

fn query_dpkg(path: &str) -> Option<String> {
    let output = Command::new("dpkg-query")
        .arg("-S")
        .arg(path)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    parse_dpkg_search(&String::from_utf8_lossy(&output.stdout))
}

/// `libc6:amd64: /usr/lib/x86_64-linux-gnu/libc.so.6` → `libc6` (the architecture qualifier is
/// not part of the dbgsym package's name; diversions' lines are skipped).
fn parse_dpkg_search(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .filter(|line| !line.starts_with("diversion by"))
        .find_map(|line| {
            let (packages, _path) = line.split_once(": ")?;
            let first = packages.split(", ").next()?;
            let name = first.split(':').next()?.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_search_lines_name_the_package_without_its_architecture() {
        assert_eq!(
            parse_dpkg_search("libc6:amd64: /usr/lib/x86_64-linux-gnu/libc.so.6\n").as_deref(),
            Some("libc6")
        );
        assert_eq!(
            parse_dpkg_search("redis-server: /usr/bin/redis-server\n").as_deref(),
            Some("redis-server")
        );
        assert_eq!(parse_dpkg_search(""), None);
    }

    #[test]
    fn a_packaged_library_without_symbols_names_its_dbgsym_package() {
        let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
        if !Path::new(libc).exists() {
            return;
        }
        assert_eq!(
            missing_symbols(libc),
            format!("no symbols in {libc} (install libc6-dbgsym from the debian-debug archive)")
        );
    }
}
