//! A kernel that refuses one `ioctl` to one process: a launcher that installs a seccomp filter
//! (libseccomp's Python module, Debian's `python3-seccomp`) and then executes the daemon. The
//! daemon's call reaches the kernel, and the kernel answers `EINVAL`, as a kernel without the
//! feature does; everything else the daemon asks is answered as usual. Filters are inherited
//! by the process alone, never by the test or its other daemons.

use std::ffi::OsString;

/// Debian's Python, where `python3-seccomp` installs its module (a `python3` earlier in `PATH`
/// may be another one).
const PYTHON: &str = "/usr/bin/python3";

/// Installs the filter from its arguments (request, argument or `any`), then runs the rest.
const LAUNCHER: &str = r#"
import errno, os, sys, seccomp
request, argument, program = int(sys.argv[1], 0), sys.argv[2], sys.argv[3:]
rule = [seccomp.Arg(1, seccomp.EQ, request)]
if argument != "any":
    rule.append(seccomp.Arg(2, seccomp.EQ, int(argument, 0)))
refuse = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
refuse.add_rule(seccomp.ERRNO(errno.EINVAL), "ioctl", *rule)
refuse.load()
os.execvp(program[0], program)
"#;

/// The words to put before a program so that the kernel refuses it `ioctl(fd, request, ..)`
/// with `EINVAL`: for every third argument, or only for `argument` when given.
pub fn refusing_ioctl(request: u64, argument: Option<u64>) -> Vec<OsString> {
    let argument = argument.map_or_else(|| "any".to_string(), |value| format!("{value:#x}"));
    [
        PYTHON.to_string(),
        "-c".to_string(),
        LAUNCHER.to_string(),
        format!("{request:#x}"),
        argument,
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}
