import JobQueue
import Synchronization

/// Jobs leased ahead of the free slots, waiting for one, and how far ahead to lease.
///
/// With jobs that take microseconds, a worker that leases only its free slots spends most of its time waiting for
/// the next fetch round trip. The buffer lets the fetch loop lease ahead: `target` jobs, enough to cover one fetch
/// round trip at the rate jobs finish (`concurrency × round trip ÷ run time`, both measured, at most `fetchBatch`),
/// so the next fetch overlaps the running jobs. Jobs that take longer than `concurrency` round trips get a target of
/// 0: a worker never holds long jobs that another idle worker could run. Until a run time has been measured the
/// target is 0.
///
/// Buffered jobs hold leases: the lease keeper renews them (`leased`), a cancel request or a lost lease takes them
/// out (`take`), jobs left waiting longer than a heartbeat are handed back (`takeStale`), and shutdown hands the rest
/// back (`removeAll`) without counting an attempt.
final class PrefetchBuffer: Sendable {
    private struct State {
        var jobs: [(job: LeasedJob, since: ContinuousClock.Instant)] = []
        var head = 0
        /// Jobs taken by the starter and not yet in the table of running attempts.
        var starting = 0
        /// Moving averages, in seconds.
        var runTime: Double?
        var roundTrip: Double?
        /// When a handler last finished.
        var lastFinish: ContinuousClock.Instant?

        var count: Int { jobs.count - head }
    }

    /// Jobs run at once (`--concurrency`).
    let concurrency: Int
    /// Most jobs leased ahead (`--fetch-batch`).
    let limit: Int
    private let state = Mutex(State())
    /// Fired when the fetch loop may have to lease more (jobs left the buffer, a slot freed) and at shutdown.
    let drained = AsyncSignal()

    init(concurrency: Int, limit: Int) {
        self.concurrency = max(1, concurrency)
        self.limit = max(0, limit)
    }

    /// Jobs waiting (and being started).
    var count: Int { state.withLock { $0.count + $0.starting } }
    var isEmpty: Bool { count == 0 }

    /// How many jobs to lease ahead of the free slots now. The run time is at least the time since a job last
    /// finished: after an idle spell, or when every slot holds a job that has run for long, the target is 0 until jobs
    /// are seen finishing quickly again.
    func target() -> Int {
        state.withLock { state in
            guard var run = state.runTime, let trip = state.roundTrip, let lastFinish = state.lastFinish else { return 0 }
            run = max(run, (ContinuousClock.now - lastFinish).seconds)
            let cover = Double(concurrency) * trip / max(run, 1e-7)
            return cover >= Double(limit) ? limit : Int(cover)
        }
    }

    /// Notes how long a handler ran (the starter's side of the target).
    func noteRun(_ duration: Duration) {
        let seconds = duration.seconds
        state.withLock { state in
            state.runTime = state.runTime.map { $0 * 0.9 + seconds * 0.1 } ?? seconds
            state.lastFinish = .now
        }
    }

    /// Notes how long a fetch round trip took.
    func noteRoundTrip(_ duration: Duration) {
        let seconds = duration.seconds
        state.withLock { $0.roundTrip = $0.roundTrip.map { $0 * 0.8 + seconds * 0.2 } ?? seconds }
    }

    /// Adds leased jobs at the back.
    func append(_ jobs: [LeasedJob]) {
        guard !jobs.isEmpty else { return }
        let now = ContinuousClock.now
        state.withLock { state in
            for job in jobs { state.jobs.append((job, now)) }
        }
    }

    /// Takes up to `count` jobs from the front to start; call `started` once they are in the table of running attempts.
    func takeToStart(_ count: Int) -> [LeasedJob] {
        guard count > 0 else { return [] }
        return state.withLock { state in
            let n = min(count, state.count)
            guard n > 0 else { return [] }
            let taken = state.jobs[state.head..<(state.head + n)].map(\.job)
            state.head += n
            state.starting += n
            compact(&state)
            return taken
        }
    }

    /// The jobs taken by `takeToStart` are running (or recorded): they no longer count as buffered.
    func started(_ count: Int) {
        state.withLock { $0.starting -= count }
    }

    /// The leases to renew: every job waiting.
    func leased() -> [LeasedJob] {
        state.withLock { state in state.jobs[state.head...].map(\.job) }
    }

    /// Takes the jobs with these ids out (a cancel request or a lost lease found by the lease keeper); returns those
    /// that were still waiting.
    func take(_ ids: Set<String>) -> [LeasedJob] {
        guard !ids.isEmpty else { return [] }
        return state.withLock { state in remove(&state) { ids.contains($0.job.id) } }
    }

    /// Takes out the jobs that have waited longer than `age` (the worker is not keeping up with them: another worker
    /// may be idle).
    func takeStale(olderThan age: Duration) -> [LeasedJob] {
        let cutoff = ContinuousClock.now - age
        return state.withLock { state in remove(&state) { $0.since < cutoff } }
    }

    /// Empties the buffer; returns the jobs that were waiting.
    func removeAll() -> [LeasedJob] {
        state.withLock { state in remove(&state) { _ in true } }
    }

    private func remove(_ state: inout State, where match: ((job: LeasedJob, since: ContinuousClock.Instant)) -> Bool) -> [LeasedJob] {
        var kept: [(job: LeasedJob, since: ContinuousClock.Instant)] = []
        var taken: [LeasedJob] = []
        for entry in state.jobs[state.head...] {
            if match(entry) { taken.append(entry.job) } else { kept.append(entry) }
        }
        if !taken.isEmpty {
            state.jobs = kept
            state.head = 0
        }
        return taken
    }

    private func compact(_ state: inout State) {
        if state.head == state.jobs.count {
            state.jobs.removeAll(keepingCapacity: true)
            state.head = 0
        } else if state.head > 256 {
            state.jobs.removeFirst(state.head)
            state.head = 0
        }
    }
}

