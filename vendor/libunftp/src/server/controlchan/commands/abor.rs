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
use crate::server::chancomms::ControlChanMsg;
use async_trait::async_trait;
use std::time::Duration;
use tokio::sync::oneshot;
use unftp_core::auth::UserDetail;
use unftp_core::storage::{Metadata, StorageBackend};

/// strata: how long ABOR waits for the data loop to say whether it cancelled
/// a transfer; it answers at once, unless it is gone, which also answers.
const ABORT_WAIT: Duration = Duration::from_secs(10);

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
        let abort_tx = {
            let mut session = args.session.lock().await;
            if session.data_abort_rx.take().is_some() {
                // No data connection came (yet): no data loop runs, and none
                // will for this PASV/PORT. A transfer command waiting for one
                // is cancelled with it, and a connection coming late is not
                // taken (`Session::pending_accept`).
                session.data_abort_tx = None;
                if let Some(accepting) = session.pending_accept.take() {
                    accepting.abort();
                }
                let waiting = session.data_cmd_rx.take().is_some_and(|mut commands| commands.try_recv().is_ok());
                return Ok(if waiting {
                    Reply::AbortedTransfer
                } else {
                    Reply::new(ReplyCode::ClosingDataConnection, "Closed data channel")
                });
            }
            session.data_abort_tx.take()
        };
        let Some(abort_tx) = abort_tx else {
            return Ok(Reply::new(ReplyCode::ClosingDataConnection, "Data channel already closed"));
        };
        let (cancelled_tx, cancelled_rx) = oneshot::channel();
        if abort_tx.send(cancelled_tx).await.is_ok() && matches!(tokio::time::timeout(ABORT_WAIT, cancelled_rx).await, Ok(Ok(()))) {
            slog::info!(args.logger, "Transfer aborted");
            return Ok(Reply::AbortedTransfer);
        }
        // Nothing was cancelled: a transfer that ended meanwhile has its final
        // reply queued already, and ABOR's 226 must come after it.
        let control = args.tx_control_chan.clone();
        tokio::spawn(async move {
            let _ = control.send(ControlChanMsg::NothingToAbort).await;
        });
        Ok(Reply::none())
    }
}
