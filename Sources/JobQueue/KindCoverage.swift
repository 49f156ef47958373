/// Whether the live workers of a queue run a job kind: what a producer checks before it enqueues, so that a typo in
/// a kind is reported at once instead of as a dead letter later.
public enum KindCoverage: Sendable, Equatable {
    /// A live worker of the queue runs the kind (or one that does not record its kinds, which may).
    case served
    /// No live worker serves the queue: the job waits until a worker serving it starts.
    case noLiveWorker
    /// Live workers serve the queue and none of them runs the kind: the first to take the job dead-letters it as
    /// `malformed`. `servedKinds` are the kinds they do run, sorted.
    case notServed(servedKinds: [String], workers: Int)
}

extension JobFarm {
    /// Checks the worker registry (`jf:workers`, `jf:worker:<id>` with its `queues` and `kinds`) for a live worker
    /// that serves `queue` and runs `kind`.
    public func coverage(ofKind kind: String, queue: String) async throws -> KindCoverage {
        // A worker's hash expires 3 leases after its last heartbeat: one without fields is gone.
        let serving = try await workers(seenWithin: .seconds(60), what: "checking the live workers of queue '\(queue)'").filter { worker in
            !worker.fields.isEmpty && worker.serves(queue: queue)
        }
        if serving.isEmpty { return .noLiveWorker }
        var kinds: Set<String> = []
        for worker in serving {
            guard let list = worker.fields["kinds"] else { return .served }
            let workerKinds = list.split(separator: ",").map(String.init)
            if workerKinds.contains(kind) { return .served }
            kinds.formUnion(workerKinds)
        }
        return .notServed(servedKinds: kinds.sorted(), workers: serving.count)
    }
}
