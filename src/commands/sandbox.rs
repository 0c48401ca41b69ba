//! `kustomer-import sandbox`: the local fake of the Kustomer API as a server of its own,
//! until Ctrl-C or SIGTERM.

use kustomer_import::sandbox::{Sandbox, SandboxConfig};

use super::Exit;

pub fn run(config: SandboxConfig, port: u16) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let token_given = config.token.is_some();
        let records = config.records.clone();
        let sandbox = Sandbox::start(config, port)
            .await
            .map_err(|error| match &records {
                Some(path) => anyhow::anyhow!(
                    "starting the sandbox on the records file {}: {error}",
                    path.display()
                ),
                None => anyhow::anyhow!("starting the sandbox: {error}"),
            })?;
        println!("sandbox listening on {}", sandbox.base_url());
        println!(
            "stats: {}/__stats  records: {}/__records",
            sandbox.base_url(),
            sandbox.base_url()
        );
        match &records {
            Some(path) => {
                let held = sandbox.stats();
                println!(
                    "records kept in {} (holding {} customers and {} conversations)",
                    path.display(),
                    held.customers,
                    held.conversations
                );
            }
            None => println!("records kept in memory only: they end with this process"),
        }
        println!("to import into it:");
        println!("  {}", import_command(&sandbox, token_given));
        println!("  (a checkpoint of its own: it belongs to this sandbox's address)");
        wait_for_signal().await;
        tracing::info!("stopping the sandbox");
        sandbox.shutdown().await;
        Ok(Exit::Success)
    })
}

/// The command that points an import at this sandbox, with a checkpoint named after its
/// port: the default checkpoint is the real import's, and would be bound to this address.
fn import_command(sandbox: &Sandbox, token_given: bool) -> String {
    let key = if token_given {
        "<the --token>"
    } else {
        "anything"
    };
    format!(
        "KUSTOMER_BASE_URL={} KUSTOMER_API_KEY={key} kustomer-import import FILE \
         --checkpoint sandbox-{}.sqlite",
        sandbox.base_url(),
        sandbox.addr().port()
    )
}

async fn wait_for_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match &mut terminate {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
}
