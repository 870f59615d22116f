//! `careplane completions <shell>` and `careplane man`: generated from the same
//! `clap::Command` that parses the command line, so they never fall behind it.

use std::path::PathBuf;

use super::{EXIT_ERROR, EXIT_OK, command, err, note, out};

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write careplane.1 and careplane-<command>.1 into this directory instead of printing
    /// careplane.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn completions(a: CompletionsArgs) -> u8 {
    let mut cmd = command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "careplane", &mut buf);
    out(&String::from_utf8_lossy(&buf));
    EXIT_OK
}

fn render(cmd: clap::Command) -> std::io::Result<String> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Every page: `careplane.1` and one `careplane-<command>.1` per subcommand.
pub fn pages() -> std::io::Result<Vec<(String, String)>> {
    let mut cmd = command();
    cmd.build();
    let mut pages = vec![("careplane.1".to_owned(), render(cmd.clone())?)];
    for sub in cmd.get_subcommands() {
        let name = format!("careplane-{}", sub.get_name());
        // clap names are 'static; these few pages live until the process ends
        let page = sub
            .clone()
            .name(&*name.clone().leak())
            .version(super::VERSION);
        pages.push((format!("{name}.1"), render(page)?));
    }
    Ok(pages)
}

pub fn man(a: ManArgs) -> u8 {
    let pages = match pages() {
        Ok(p) => p,
        Err(e) => {
            err(&format!("error: cannot render the manual page: {e}\n"));
            return EXIT_ERROR;
        }
    };
    let Some(dir) = a.out else {
        out(&pages[0].1);
        return EXIT_OK;
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        err(&format!("error: cannot create {}: {e}\n", dir.display()));
        return EXIT_ERROR;
    }
    for (name, text) in &pages {
        let path = dir.join(name);
        if let Err(e) = crate::output::write_file(&path, text) {
            err(&format!("error: cannot write {}: {e}\n", path.display()));
            return EXIT_ERROR;
        }
    }
    note(&format!(
        "Wrote {} manual page(s) to {}\n",
        pages.len(),
        dir.display()
    ));
    EXIT_OK
}
