//! `kustomer-import sandbox`: the local fake of the Kustomer API as a server of its own,
//! until Ctrl-C or SIGTERM.

use kustomer_import::sandbox::{Sandbox, SandboxConfig};

use super::Exit;

pub fn run(config: SandboxConfig, port: u16) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let sandbox = Sandbox::start(config, port).await?;
        println!("sandbox listening on {}", sandbox.base_url());
        println!(
            "stats: {}/__stats  records: {}/__records",
            sandbox.base_url(),
            sandbox.base_url()
        );
        wait_for_signal().await;
        tracing::info!("stopping the sandbox");
        sandbox.shutdown().await;
        Ok(Exit::Success)
    })
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
