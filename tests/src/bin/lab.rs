//! `lab`: the demo regional network (the README's main command). Not built yet beyond the
//! library: `lab up` / `lab down` come with the demo issue.

fn main() {
    eprintln!("lab: the demo (lab up / lab down) is not built yet; see the README");
    std::process::exit(2);
}
