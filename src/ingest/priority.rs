//! Decoding threads that yield to the model: under overload the frames already decoded should
//! reach the model before more are decoded. The streaming task that feeds a camera's video
//! decoder (the queue in front of it; it decodes, scales and converts) runs on a thread of its
//! own at niceness `[ingest] pipeline_nice`, started for that task and ended with it. Only that
//! task: a source's or the live view's threads keep the process's priority (a starved network
//! thread would lose packets), and no niced thread is ever reused by other work (GStreamer's
//! default pool hands its threads to any pipeline, and an unprivileged thread cannot lower its
//! niceness again).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer::subclass::prelude::*;

mod imp {
    use super::*;

    /// Starts each task on a new thread at the pool's niceness.
    #[derive(Default)]
    pub struct NicePool {
        pub(super) nice: AtomicI32,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for NicePool {
        const NAME: &'static str = "GridwatchNicePool";
        type Type = super::NicePool;
        type ParentType = gst::TaskPool;
    }

    impl ObjectImpl for NicePool {}

    impl GstObjectImpl for NicePool {}

    impl TaskPoolImpl for NicePool {
        type Handle = Thread;

        fn push(
            &self,
            func: gst::subclass::TaskPoolFunction,
        ) -> Result<Option<Thread>, glib::Error> {
            let nice = self.nice.load(Ordering::Relaxed);
            // GStreamer names the thread after the task's pad once it starts.
            std::thread::Builder::new()
                .spawn(move || {
                    set_thread_nice(nice);
                    func.call();
                })
                .map(|handle| Some(Thread(handle)))
                .map_err(|e| glib::Error::new(gst::CoreError::Failed, &e.to_string()))
        }
    }

    pub struct Thread(std::thread::JoinHandle<()>);

    impl gst::TaskHandle for Thread {
        fn join(self) {
            // A task that panicked has ended all the same; the panic was reported already.
            let _ = self.0.join();
        }
    }
}

glib::wrapper! {
    pub struct NicePool(ObjectSubclass<imp::NicePool>) @extends gst::TaskPool, gst::Object;
}

/// The process's pool for decoding tasks, at the niceness last asked for (the setting is the
/// node's, one value for all cameras).
fn pool(nice: i32) -> &'static NicePool {
    static POOL: OnceLock<NicePool> = OnceLock::new();
    let pool = POOL.get_or_init(glib::Object::new::<NicePool>);
    pool.imp().nice.store(nice, Ordering::Relaxed);
    pool
}

/// Runs the task that feeds `pipeline`'s video decoder at niceness `nice` (0: as the process;
/// see the module doc). Each task announces its creation on the bus before it starts, from the
/// thread that creates it, where a sync handler can still give it another pool.
pub fn yield_decoding(pipeline: &gst::Pipeline, nice: i32) {
    let Some(bus) = pipeline.bus().filter(|_| nice > 0) else {
        return;
    };
    bus.set_sync_handler(move |_, message| {
        if let gst::MessageView::StreamStatus(status) = message.view()
            && let (gst::StreamStatusType::Create, owner) = status.get()
            && feeds_decoder(&owner)
            && let Some(task) = status
                .stream_status_object()
                .and_then(|v| v.get::<gst::Task>().ok())
        {
            task.set_pool(pool(nice));
        }
        gst::BusSyncReply::Pass
    });
}

/// Whether `element`'s output goes straight into a decoder (an element or a bin such as
/// decodebin whose class says so).
fn feeds_decoder(element: &gst::Element) -> bool {
    element
        .static_pad("src")
        .and_then(|pad| pad.peer())
        .and_then(|peer| peer.parent_element())
        .and_then(|next| next.factory())
        .is_some_and(|f| f.klass().contains("Decoder"))
}

/// Sets the calling thread's niceness (Linux: per thread). A refusal leaves the thread at the
/// process's priority, which only costs the preference.
fn set_thread_nice(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: two plain system calls about the calling thread; no memory is shared.
        let failed = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) != 0
        };
        if failed {
            tracing::debug!(
                nice,
                error = %std::io::Error::last_os_error(),
                "decoding thread keeps the process's priority"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
