//! The RFC 959 Abort (`ABOR`) command
//
// This command tells the server to abort the previous FTP
// service command and any associated transfer of data. The
// abort command may require "special action", as discussed in
// the Section on FTP Commands, to force recognition by the
// server.  No action is to be taken if the previous command
// has been completed (including data transfer).  The control
// connection is not to be closed by the server, but the data
// connection must be closed.

use crate::server::controlchan::{
    Reply, ReplyCode,
    error::ControlChanError,
    handler::{CommandContext, CommandHandler},
};
use async_trait::async_trait;
use tokio::sync::oneshot;
use unftp_core::auth::UserDetail;
use unftp_core::storage::{Metadata, StorageBackend};

#[derive(Debug)]
pub struct Abor;

#[async_trait]
impl<Storage, User> CommandHandler<Storage, User> for Abor
where
    Storage: StorageBackend<User> + 'static,
    Storage::Metadata: Metadata,
    User: UserDetail + 'static,
{
    #[tracing_attributes::instrument]
    async fn handle(&self, args: CommandContext<Storage, User>) -> Result<Reply, ControlChanError> {
        // strata: ABOR stops a transfer in flight, and a cancelled upload
        // stores nothing. The data loop no longer holds the session's lock
        // during a transfer, so this runs while it does; before, ABOR waited
        // for the transfer to end, and a client that cancelled an upload and
        // closed the data connection had its first part stored in place of
        // the file.
        let abort_tx = args.session.lock().await.data_abort_tx.take();
        let Some(abort_tx) = abort_tx else {
            return Ok(Reply::new(ReplyCode::ClosingDataConnection, "Data channel already closed"));
        };
        let (cancelled_tx, cancelled_rx) = oneshot::channel();
        if abort_tx.send(cancelled_tx).await.is_ok() && cancelled_rx.await.is_ok() {
            slog::info!(args.logger, "Transfer aborted");
            return Ok(Reply::AbortedTransfer);
        }
        Ok(Reply::new(ReplyCode::ClosingDataConnection, "Closed data channel"))
    }
}
