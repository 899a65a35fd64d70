//! The service's own config check, run by `scaleout up` before anything starts and by
//! `scaleout k8s` before any manifest is written.
//!
//! For the shop (the default command), the instance command line is parsed by the very
//! parser `scaleout shop` uses and validated by `ShopConfig::validate`, in process: a
//! command the shop would refuse (and so crash-loop on) is refused here, with the shop's
//! own first error line and the command. For any other command, the program must exist.
//! What only shows at run time (a database that refuses connections) is reported by the
//! fleet, with the instance's last log lines, when the instance exits.

use std::path::Path;

use anyhow::Context;

/// `scaleout shop`'s serving flags as a standalone parser (argv without the program).
#[derive(Debug, clap::Parser)]
#[command(no_binary_name = true, name = "scaleout shop")]
struct ShopCommand {
    #[command(flatten)]
    serve: super::shop::ServeArgs,
}

/// Checks the instance command of `cfg` as `exe` would run it (placeholders filled as for
/// a first instance). The error names the command and the shop's reason.
pub fn check_service(cfg: &fleet::DeploymentConfig, exe: &Path) -> anyhow::Result<()> {
    let fleet_cfg = cfg.resolved_fleet();
    let vars = fleet::process::TemplateVars {
        exe: exe.to_path_buf(),
        addr: std::net::SocketAddr::from((fleet_cfg.host, 0)),
        id: "preflight".into(),
        data_dir: fleet_cfg.data_dir.clone(),
    };
    let argv: Vec<String> = fleet_cfg
        .command_template()
        .iter()
        .map(|w| fleet::process::expand(w, &vars))
        .collect();
    let is_shop = cfg.fleet.command.is_empty()
        || (argv.get(1).map(String::as_str) == Some("shop") && Path::new(&argv[0]) == exe);
    if is_shop {
        return check_shop_argv(&argv[2..]).with_context(|| {
            format!(
                "the service command `{}` would exit at once ([service] / fleet.command)",
                argv.join(" ")
            )
        });
    }
    let program = Path::new(&argv[0]);
    let found = if argv[0].contains('/') {
        program.is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
    };
    anyhow::ensure!(
        found,
        "invalid config: fleet.command: program `{}` not found",
        argv[0]
    );
    Ok(())
}

/// Parses and validates the shop's serving flags (`args` after `shop`).
pub fn check_shop_argv(args: &[String]) -> anyhow::Result<()> {
    use clap::Parser;
    let parsed = ShopCommand::try_parse_from(args).map_err(|e| {
        let text = e.render().to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or("invalid arguments")
            .to_string();
        anyhow::anyhow!("{}", first.trim_start_matches("error: "))
    })?;
    parsed.serve.into_config()?;
    Ok(())
}
