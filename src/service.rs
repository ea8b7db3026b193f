//! [`AppService`]: a built app, endpoint or chain, erased to one type.
//!
//! Apps are assembled from the config at run time, so their types are erased at one deliberate
//! boundary: here. Unlike tower's `BoxCloneSyncService`, whose every clone allocates a new box,
//! an `AppService` is shared behind an `Arc`: the gateway hands one out per request for the price of
//! a reference count.
//!
//! # Runs of steps
//!
//! Erasing each layer of a chain on its own would cost one boxed future per layer and request. Most
//! of parapet's middlewares are not arbitrary layers, though: they are
//! [guards](parapet_middlewares::guard::Guard) and
//! [interceptors](parapet_middlewares::intercept::Interceptor), which look at the request on the way
//! in and at the response head on the way out. Adjacent ones are kept together as one *run* of
//! [steps](Step) around the service inside them, and driven by one future ([`Started`]): each
//! step's state lives in a fixed slot of that future (or, for a state too large for a slot, in a box
//! of its own), so a run costs one boxed future whatever its length, and none when the router
//! starts it in its own future ([`AppService::start`]).

use std::convert::Infallible;
use std::future::Future;
use std::mem::{align_of, size_of, MaybeUninit};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use parapet_middlewares::guard::Guard;
use parapet_middlewares::intercept::Interceptor;
use tower::{Service, ServiceExt};

use crate::{Request, Response};

/// The future of an [`AppService`].
pub type AppFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

trait Erased: Send + Sync {
    fn call(&self, req: Request) -> AppFuture;
}

struct Shared<S>(S);

impl<S> Erased for Shared<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, req: Request) -> AppFuture {
        // tower services are called through `&mut self`: each call gets its own clone, cheap for
        // every parapet service (they hold `Arc`s).
        Box::pin(self.0.clone().oneshot(req))
    }
}

struct FnService<F>(F);

impl<F> Erased for FnService<F>
where
    F: Fn(Request) -> AppFuture + Send + Sync + 'static,
{
    fn call(&self, req: Request) -> AppFuture {
        (self.0)(req)
    }
}

/// A built app or endpoint: a cloneable service that never fails (every failure is a response).
#[derive(Clone)]
pub struct AppService {
    inner: Kind,
    /// Whether something in it may read the tags outer layers put in a request's extensions for
    /// readers inside ([`AppService::reads_tags`]).
    reads_tags: bool,
}

#[derive(Clone)]
enum Kind {
    /// A service of its own type, erased.
    Erased(Arc<dyn Erased>),
    /// A run of steps around a service that is not itself a run.
    Run(Arc<Run>),
}

/// Steps, outermost first, around `inner`.
struct Run {
    steps: Box<[Arc<dyn Step>]>,
    inner: AppService,
}

impl AppService {
    /// Erases `service`.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            inner: Kind::Erased(Arc::new(Shared(service))),
            reads_tags: true,
        }
    }

    /// An app from a function returning the response future directly: one allocation per request
    /// (the future's box) and no tower readiness protocol, for endpoints that are always ready.
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(Request) -> AppFuture + Send + Sync + 'static,
    {
        Self {
            inner: Kind::Erased(Arc::new(FnService(f))),
            reads_tags: true,
        }
    }

    /// Whether something in this service may read the tags that layers outside it put in a
    /// request's extensions only for readers inside: a `request_id` layer's
    /// [`RequestId`](parapet_middlewares::request_id::RequestId), the router's
    /// [`PanicSignal`](parapet_middlewares::host::PanicSignal). True unless said otherwise
    /// ([`AppService::reads_no_tags`]): a service of unknown make may read them.
    pub fn reads_tags(&self) -> bool {
        self.reads_tags
    }

    /// This service, known to read none of those tags: a `request_id` layer around it leaves its
    /// extension out, and so does the router, and the request is spared their boxes and map
    /// inserts. For endpoints and layers that read neither (parapet's own, but for `access_log` and
    /// `errors`).
    pub fn reads_no_tags(self) -> Self {
        self.with_tags_read(false)
    }

    /// This service with its [`AppService::reads_tags`] set to `reads`.
    pub(crate) fn with_tags_read(mut self, reads: bool) -> Self {
        self.reads_tags = reads;
        self
    }

    /// This service inside `step`: the step becomes the outermost of the run this service starts
    /// with, or of a new run around it. Whether it reads tags is the inner service's answer (the
    /// step's own is its middleware's to add, see `crate::chain`).
    pub fn with_step(self, step: Arc<dyn Step>) -> Self {
        let reads_tags = self.reads_tags;
        let run = match self.inner {
            Kind::Run(run) => Run {
                steps: std::iter::once(step)
                    .chain(run.steps.iter().cloned())
                    .collect(),
                inner: run.inner.clone(),
            },
            Kind::Erased(_) => Run {
                steps: Box::new([step]),
                inner: self,
            },
        };
        Self {
            inner: Kind::Run(Arc::new(run)),
            reads_tags,
        }
    }

    /// Handles one request.
    pub fn handle(&self, req: Request) -> AppFuture {
        match &self.inner {
            Kind::Erased(service) => service.call(req),
            Kind::Run(_) => Box::pin(self.start(req)),
        }
    }

    /// Handles one request in a future of the caller's own, without boxing a run of steps: what the
    /// router does for the app of every route. A run's steps see the request when the future is first
    /// polled; a service of its own type is called at once, as `handle` calls it.
    pub fn start(&self, req: Request) -> Started {
        match &self.inner {
            Kind::Erased(service) => Started {
                state: State::Inner {
                    fut: service.call(req),
                },

                run: None,
                filled: 0,
                slots: Slots::new(0),
            },
            Kind::Run(run) => Started {
                state: State::Waiting { req: Some(req) },
                slots: Slots::new(run.steps.len()),
                run: Some(Arc::clone(run)),
                filled: 0,
            },
        }
    }
}

impl std::fmt::Debug for AppService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppService").finish_non_exhaustive()
    }
}

impl Service<Request> for AppService {
    type Response = Response;
    type Error = Infallible;
    type Future = AppFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is awaited inside `handle`, on the call's own clone.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> AppFuture {
        self.handle(req)
    }
}

/// One step of a run: a [`Guard`] or an [`Interceptor`] with its state type erased. Made by
/// [`guard_step`] and [`interceptor_step`]; implemented only here, since a step must keep the
/// promises of [`Slot`].
pub trait Step: sealed::Sealed + Send + Sync + 'static {
    /// Sees the request on its way in. `Ok`: the step's state is now in `slot`, for
    /// [`Step::response`] or [`Step::discard`]. `Err`: the step's answer; `slot` is left empty.
    #[allow(clippy::result_large_err)] // moved once, as `Guard::request`'s answer is
    fn request(&self, req: &mut Request, slot: &mut Slot) -> Result<(), Response>;

    /// Sees the response head on its way out, taking the state out of `slot`.
    ///
    /// # Safety
    /// `slot` holds the state this step's own `request` put there, not yet taken.
    unsafe fn response(&self, slot: &mut Slot, res: &mut Response);

    /// Drops the state in `slot` without a response: the request was dropped first.
    ///
    /// # Safety
    /// As for [`Step::response`].
    unsafe fn discard(&self, slot: &mut Slot);
}

/// A [`Guard`] as a step.
pub fn guard_step<G: Guard>(guard: G) -> Arc<dyn Step> {
    Arc::new(GuardStep(guard))
}

/// An [`Interceptor`] as a step.
pub fn interceptor_step<I: Interceptor>(interceptor: I) -> Arc<dyn Step> {
    Arc::new(GuardStep(Passes(interceptor)))
}

mod sealed {
    pub trait Sealed {}
    impl<G> Sealed for super::GuardStep<G> {}
}

struct GuardStep<G>(G);

impl<G: Guard> Step for GuardStep<G> {
    fn request(&self, req: &mut Request, slot: &mut Slot) -> Result<(), Response> {
        let state = self.0.request(req)?;
        slot.put(state);
        Ok(())
    }

    unsafe fn response(&self, slot: &mut Slot, res: &mut Response) {
        // SAFETY: the caller's promise: `slot` holds a `G::State` from `request`.
        let state = unsafe { slot.take::<G::State>() };
        self.0.response(state, res);
    }

    unsafe fn discard(&self, slot: &mut Slot) {
        // SAFETY: as above.
        drop(unsafe { slot.take::<G::State>() });
    }
}

/// An interceptor is a guard that always passes the request on.
#[derive(Clone)]
struct Passes<I>(I);

impl<I: Interceptor> Guard for Passes<I> {
    type State = I::State;

    fn request(&self, req: &mut Request) -> Result<I::State, Response> {
        Ok(self.0.request(req))
    }

    fn response(&self, state: I::State, res: &mut Response) {
        self.0.response(state, res)
    }
}

/// Words in a [`Slot`]: a state of up to 64 bytes (a `HeaderValue` is 40) is kept in place.
const SLOT_WORDS: usize = 8;

/// Where a step keeps its state between the request and the response: in place when the state's
/// type fits (size and alignment), else in a box whose pointer the slot holds. Which of the two is
/// fixed by the type, so `put` and `take` of the same type always agree. A slot does not know
/// whether it is full: the run that owns it does, and drops what is left through
/// [`Step::discard`].
pub struct Slot(MaybeUninit<[usize; SLOT_WORDS]>);

impl Slot {
    const EMPTY: Slot = Slot(MaybeUninit::uninit());

    const fn inline<T>() -> bool {
        size_of::<T>() <= size_of::<[usize; SLOT_WORDS]>() && align_of::<T>() <= align_of::<usize>()
    }

    fn put<T>(&mut self, value: T) {
        if Self::inline::<T>() {
            // SAFETY: `T` fits the slot's size and alignment (checked just above).
            unsafe { self.0.as_mut_ptr().cast::<T>().write(value) }
        } else {
            let boxed = Box::into_raw(Box::new(value));
            // SAFETY: a pointer fits a slot.
            unsafe { self.0.as_mut_ptr().cast::<*mut T>().write(boxed) }
        }
    }

    /// # Safety
    /// The slot holds a `T` put by [`Slot::put`] and not taken since.
    unsafe fn take<T>(&mut self) -> T {
        if Self::inline::<T>() {
            // SAFETY: the caller's promise; reading moves the value out, the slot is empty again.
            unsafe { self.0.as_ptr().cast::<T>().read() }
        } else {
            // SAFETY: the caller's promise: the slot holds the pointer `put` boxed.
            unsafe { *Box::from_raw(self.0.as_ptr().cast::<*mut T>().read()) }
        }
    }
}

/// Slots for a run: in the future itself for runs of up to [`INLINE_SLOTS`] steps (the common
/// case, no allocation), else in one vector.
// The in-place variant is the point: it lives in the (already boxed) future of the router.
#[allow(clippy::large_enum_variant)]
enum Slots {
    Inline([Slot; INLINE_SLOTS]),
    Heap(Vec<Slot>),
}

/// Steps a run keeps in place.
const INLINE_SLOTS: usize = 4;

impl Slots {
    fn new(steps: usize) -> Self {
        if steps <= INLINE_SLOTS {
            Slots::Inline([Slot::EMPTY; INLINE_SLOTS])
        } else {
            Slots::Heap((0..steps).map(|_| Slot::EMPTY).collect())
        }
    }

    fn get(&mut self, i: usize) -> &mut Slot {
        match self {
            Slots::Inline(slots) => &mut slots[i],
            Slots::Heap(slots) => &mut slots[i],
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`AppService::start`]: the service's own future, or a run of steps around one.
    pub struct Started {
        #[pin]
        state: State,
        run: Option<Arc<Run>>,
        // Steps `0..filled` passed the request on and hold their state in their slot.
        filled: usize,
        slots: Slots,
    }

    impl PinnedDrop for Started {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            // The inner future first, then the states innermost first: the order nested layers'
            // futures drop in.
            this.state.set(State::Done);
            if let Some(run) = this.run {
                while *this.filled > 0 {
                    *this.filled -= 1;
                    let i = *this.filled;
                    // SAFETY: step `i` put its state in slot `i` and nothing took it.
                    unsafe { run.steps[i].discard(this.slots.get(i)) };
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State {
        // The request, until the first poll runs the steps' `request`.
        Waiting { req: Option<Request> },
        // The service inside the run (or the service itself) answering.
        Inner { #[pin] fut: AppFuture },
        // A step answered: the answer, until the outer steps have seen it.
        Answered { answer: Option<Response> },
        Done,
    }
}

impl Future for Started {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = loop {
            match this.state.as_mut().project() {
                StateProj::Inner { fut } => break ready!(fut.poll(cx))?,
                StateProj::Answered { answer } => break answer.take().unwrap_or_default(),
                StateProj::Waiting { req } => {
                    let run = this.run.as_ref().expect("a waiting future has a run");
                    let mut answer = None;
                    // The steps see the request where it is: a request is large, and each move of
                    // it a copy.
                    let waiting = req.as_mut().expect("polled after the request was taken");
                    for step in run.steps.iter() {
                        let slot = this.slots.get(*this.filled);
                        match step.request(waiting, slot) {
                            Ok(()) => *this.filled += 1,
                            Err(a) => {
                                answer = Some(a);
                                break;
                            }
                        }
                    }
                    let next = match (answer, req.take()) {
                        (Some(answer), _) => State::Answered {
                            answer: Some(answer),
                        },
                        (None, Some(req)) => State::Inner {
                            fut: run.inner.handle(req),
                        },
                        (None, None) => unreachable!("the request was there a moment ago"),
                    };
                    this.state.set(next);
                }
                StateProj::Done => return Poll::Pending,
            }
        };
        this.state.set(State::Done);
        if let Some(run) = this.run.as_ref() {
            while *this.filled > 0 {
                *this.filled -= 1;
                let i = *this.filled;
                // SAFETY: step `i` put its state in slot `i` and nothing took it; `filled` no
                // longer counts it, so it is taken once.
                unsafe { run.steps[i].response(this.slots.get(i), &mut response) };
            }
        }
        Poll::Ready(Ok(response))
    }
}

pin_project_lite::pin_project! {
    /// A response future as an app's ([`AppFuture`]): its response, never an error. A wrapper
    /// rather than an `async move { Ok(fut.await) }` block, which would hold the wrapped future in a
    /// slot of its own beside the block's, so that the box an app's future goes in is larger and
    /// every request copies more into it (rust-lang/rust#62958).
    pub(crate) struct NeverFails<F> {
        #[pin]
        fut: F,
    }
}

impl<F: Future<Output = Response> + Send + 'static> NeverFails<F> {
    /// The future `make` makes, wrapped and boxed as an app's ([`boxed_in_place`]).
    #[inline(always)]
    pub(crate) fn boxed(make: impl FnOnce() -> F) -> AppFuture {
        boxed_in_place(move || NeverFails { fut: make() })
    }
}

/// The future `make` makes, boxed as an app's: the box is allocated first and the future made in
/// it, where `Box::pin(make())` makes it on the stack and then copies it into the box, its whole
/// size (a proxied request's future is kibibytes), on every request.
#[inline(always)]
pub(crate) fn boxed_in_place<F>(make: impl FnOnce() -> F) -> AppFuture
where
    F: Future<Output = Result<Response, Infallible>> + Send + 'static,
{
    let mut slot = Box::<F>::new_uninit();
    slot.write(make());
    // SAFETY: written just above.
    Box::into_pin(unsafe { slot.assume_init() })
}

impl<F: Future<Output = Response>> Future for NeverFails<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().fut.poll(cx).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{build, Middleware};
    use crate::Body;
    use http::{HeaderValue, StatusCode};
    use parapet_middlewares::guard::answer;
    use std::sync::Mutex;

    /// What the steps saw, in order.
    type Seen = Arc<Mutex<Vec<String>>>;

    /// Tags the request on the way in and the response on the way out; its state is large when
    /// `big` (a boxed slot) and says when it is dropped unused.
    #[derive(Clone)]
    struct Tag {
        name: &'static str,
        seen: Seen,
        big: bool,
    }

    struct TagState {
        name: &'static str,
        seen: Seen,
        used: bool,
        _ballast: Option<Box<[u8; 256]>>,
        _inline_ballast: [u64; 2],
    }

    impl Drop for TagState {
        fn drop(&mut self) {
            if !self.used {
                self.seen
                    .lock()
                    .unwrap()
                    .push(format!("drop {}", self.name));
            }
        }
    }

    impl Interceptor for Tag {
        type State = (TagState, [u64; 16]);
        fn request(&self, req: &mut Request) -> Self::State {
            self.seen.lock().unwrap().push(format!("in {}", self.name));
            req.headers_mut()
                .append("x-in", HeaderValue::from_static(self.name));
            let state = TagState {
                name: self.name,
                seen: Arc::clone(&self.seen),
                used: false,
                _ballast: self.big.then(|| Box::new([0; 256])),
                _inline_ballast: [0; 2],
            };
            (state, [7; 16])
        }
        fn response(&self, (mut state, check): Self::State, res: &mut Response) {
            assert_eq!(check, [7; 16]);
            state.used = true;
            self.seen.lock().unwrap().push(format!("out {}", self.name));
            res.headers_mut()
                .append("x-out", HeaderValue::from_static(self.name));
        }
    }

    /// Refuses requests with `x-refuse`.
    #[derive(Clone)]
    struct Refuse;

    impl Guard for Refuse {
        type State = HeaderValue;
        fn request(&self, req: &mut Request) -> Result<HeaderValue, Response> {
            if req.headers().contains_key("x-refuse") {
                return Err(answer(StatusCode::FORBIDDEN));
            }
            Ok(HeaderValue::from_static("passed"))
        }
        fn response(&self, state: HeaderValue, res: &mut Response) {
            res.headers_mut().insert("x-guard", state);
        }
    }

    fn endpoint(seen: Seen) -> AppService {
        AppService::from_fn(move |req: Request| {
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                let ins: Vec<_> = req.headers().get_all("x-in").iter().cloned().collect();
                seen.lock().unwrap().push(format!("endpoint {ins:?}"));
                if req.headers().contains_key("x-hang") {
                    std::future::pending::<()>().await;
                }
                Ok(Response::new(Body::empty()))
            })
        })
    }

    fn tag(name: &'static str, seen: &Seen, big: bool) -> Middleware {
        Middleware::from_interceptor(Tag {
            name,
            seen: Arc::clone(seen),
            big,
        })
    }

    fn get(header: Option<&'static str>) -> Request {
        let mut req = http::Request::get("/").body(Body::empty()).unwrap();
        if let Some(h) = header {
            req.headers_mut().insert(h, HeaderValue::from_static("1"));
        }
        req
    }

    fn outs(res: &Response) -> Vec<&str> {
        res.headers()
            .get_all("x-out")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_run_sees_requests_outermost_first_and_responses_innermost_first() {
        let seen = Seen::default();
        // Six steps: more than a run keeps in place; one state boxed.
        let chain = [
            tag("a", &seen, false),
            tag("b", &seen, true),
            Middleware::from_guard(Refuse),
            tag("c", &seen, false),
            tag("d", &seen, false),
            tag("e", &seen, false),
        ];
        let app = build(chain.iter(), endpoint(Arc::clone(&seen)));
        let res = app.handle(get(None)).await.unwrap();
        assert_eq!(outs(&res), ["e", "d", "c", "b", "a"]);
        assert_eq!(res.headers()["x-guard"], "passed");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[..5], ["in a", "in b", "in c", "in d", "in e"]);
        assert_eq!(seen[5], r#"endpoint ["a", "b", "c", "d", "e"]"#);
        assert_eq!(seen[6..], ["out e", "out d", "out c", "out b", "out a"]);
    }

    #[tokio::test]
    async fn a_guards_answer_passes_through_the_steps_outside_it_only() {
        let seen = Seen::default();
        let chain = [
            tag("a", &seen, false),
            Middleware::from_guard(Refuse),
            tag("b", &seen, false),
        ];
        let app = build(chain.iter(), endpoint(Arc::clone(&seen)));
        let res = app.start(get(Some("x-refuse"))).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(outs(&res), ["a"]);
        assert!(res.headers().get("x-guard").is_none());
        assert_eq!(*seen.lock().unwrap(), ["in a", "out a"]);
    }

    #[tokio::test]
    async fn a_dropped_run_drops_the_states_innermost_first() {
        let seen = Seen::default();
        let chain = [
            tag("a", &seen, true),
            tag("b", &seen, false),
            tag("c", &seen, false),
        ];
        let app = build(chain.iter(), endpoint(Arc::clone(&seen)));
        let mut fut = Box::pin(app.start(get(Some("x-hang"))));
        let waker = std::task::Waker::noop();
        assert!(fut
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_pending());
        drop(fut);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[4..], ["drop c", "drop b", "drop a"]);
        // Never polled: nothing ran, nothing to drop.
        let seen2 = Seen::default();
        let app = build(
            [tag("x", &seen2, false)].iter(),
            endpoint(Arc::clone(&seen2)),
        );
        drop(app.start(get(None)));
        assert!(seen2.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn layers_between_steps_split_runs_and_keep_their_place() {
        let seen = Seen::default();
        let layer = Middleware::from_layer(tower::layer::layer_fn(|inner: AppService| {
            AppService::from_fn(move |mut req: Request| {
                req.headers_mut()
                    .append("x-in", HeaderValue::from_static("layer"));
                let fut = inner.handle(req);
                Box::pin(async move {
                    let mut res = fut.await?;
                    res.headers_mut()
                        .append("x-out", HeaderValue::from_static("layer"));
                    Ok(res)
                })
            })
        }));
        let chain = [tag("a", &seen, false), layer, tag("b", &seen, false)];
        let app = build(chain.iter(), endpoint(Arc::clone(&seen)));
        let res = app.handle(get(None)).await.unwrap();
        assert_eq!(outs(&res), ["b", "layer", "a"]);
        assert_eq!(seen.lock().unwrap()[2], r#"endpoint ["a", "layer", "b"]"#);
    }
}
