//! `skiff-images`: a thin command line over the image store library.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use skiff_images::auth::CredentialStore;
use skiff_images::{Platform, Reference, RegistryConfig, Store, StoreOptions};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "skiff-images", about = "Skiff image store: pull, list, remove, gc, import, export, mount")]
struct Cli {
    /// Store root directory.
    #[arg(long, env = "SKIFF_IMAGES_ROOT", default_value = "/var/lib/skiff/images")]
    root: PathBuf,
    /// Registry host:port to use plain HTTP with (loopback hosts do unless given to --https). Repeatable.
    #[arg(long = "plain-http")]
    plain_http: Vec<String>,
    /// Registry host:port to use HTTPS with even on loopback. Repeatable.
    #[arg(long = "https")]
    https: Vec<String>,
    /// Extra PEM CA certificate for HTTPS registries. Repeatable.
    #[arg(long = "ca-cert")]
    ca_certs: Vec<PathBuf>,
    /// Docker-style config.json with registry credentials (default: $DOCKER_CONFIG or ~/.docker).
    #[arg(long = "auth-file")]
    auth_file: Option<PathBuf>,
    /// Platform to select from multi-platform images, os/arch[/variant] (default: this host).
    #[arg(long)]
    platform: Option<Platform>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pull an image from its registry.
    Pull { image: String },
    /// List stored images.
    List,
    /// Show an image's record and run config (JSON).
    Inspect { image: String },
    /// Forget an image name (its content goes at the next gc).
    Remove { image: String },
    /// Remove unreferenced blobs and snapshots.
    Gc,
    /// Import an OCI layout archive.
    Import {
        file: PathBuf,
        /// Name for the image when the archive does not carry a full one.
        #[arg(long)]
        name: Option<String>,
    },
    /// Export images as an OCI layout archive.
    Export { file: PathBuf, images: Vec<String> },
    /// Mount an image's root filesystem at CONTAINER_DIR/rootfs (upper/work beside it).
    Mount { image: String, container_dir: PathBuf },
    /// Unmount CONTAINER_DIR/rootfs and remove its upper/work directories.
    Unmount { container_dir: PathBuf },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let credentials = match cli.auth_file.clone().or_else(CredentialStore::default_path) {
        Some(path) if path.exists() => CredentialStore::load(&path)?,
        Some(path) if cli.auth_file.is_some() => anyhow::bail!("auth file {} does not exist", path.display()),
        _ => CredentialStore::default(),
    };
    let options = StoreOptions {
        registry: RegistryConfig { plain_http: cli.plain_http, https: cli.https, ca_certs: cli.ca_certs, credentials, ..Default::default() },
        platform: cli.platform.unwrap_or_else(Platform::host),
        ..Default::default()
    };
    let store = Store::open(&cli.root, options).with_context(|| format!("opening store {}", cli.root.display()))?;
    match cli.command {
        Command::Pull { image } => {
            let r: Reference = image.parse()?;
            let rec = store.pull(&r).await?;
            println!("{} {}", rec.name, rec.manifest_digest);
        }
        Command::List => {
            println!("{:<60} {:<20} {:>12}", "IMAGE", "ID", "SIZE");
            for rec in store.list()? {
                println!("{:<60} {:<20} {:>12}", rec.name, &rec.config_digest.hex()[..12], rec.size());
            }
        }
        Command::Inspect { image } => {
            let rec = store.get(&image)?;
            let run = store.run_config(&image)?;
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "image": rec, "config": run }))?);
        }
        Command::Remove { image } => {
            let rec = store.remove(&image)?;
            println!("removed {}", rec.name);
        }
        Command::Gc => {
            let r = store.gc()?;
            println!("removed {} blobs, {} snapshots, {} temp files; {} bytes freed", r.blobs, r.snapshots, r.temp_files, r.bytes);
        }
        Command::Import { file, name } => {
            let f = std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            let name = name.map(|n| n.parse::<Reference>()).transpose()?;
            for rec in store.import(std::io::BufReader::new(f), name).await? {
                println!("{} {}", rec.name, rec.manifest_digest);
            }
        }
        Command::Export { file, images } => {
            anyhow::ensure!(!images.is_empty(), "name at least one image to export");
            let f = std::fs::File::create(&file).with_context(|| format!("creating {}", file.display()))?;
            store.export(&images, std::io::BufWriter::new(f))?;
        }
        Command::Mount { image, container_dir } => {
            println!("{}", store.mount_rootfs(&image, &container_dir)?.display());
        }
        Command::Unmount { container_dir } => store.unmount_rootfs(&container_dir)?,
    }
    Ok(())
}
