import JobProtocol

extension HandlerRegistry {
    /// The retry policy jobs of `kind` run under (the handler's, or what replaced it); nil for a kind not registered.
    public func retryPolicy(for kind: String) -> RetryPolicy? { entry(for: kind)?.retryPolicy }

    /// The timeout cap of `kind` (nil: none, or a kind not registered).
    public func timeoutCap(for kind: String) -> Duration? { entry(for: kind)?.timeoutCap }

    /// Replaces the retry policy of a registered kind (a pool's `retry:` in `workers.yaml`: the handler's policy is
    /// the default, the file overrides it). Returns false, changing nothing, when no handler runs `kind`.
    @discardableResult
    public mutating func setRetryPolicy(_ policy: RetryPolicy, for kind: String) -> Bool {
        guard var entry = self.entry(for: kind) else { return false }
        entry.retryPolicy = policy
        replace(kind, with: entry)
        return true
    }

    /// Caps how long an attempt of `kind` may run (a pool's `timeouts:`): a job whose own timeout is longer times out
    /// at the cap; a shorter one keeps its own. Returns false, changing nothing, when no handler runs `kind`.
    @discardableResult
    public mutating func capTimeout(of kind: String, at cap: Duration) -> Bool {
        guard var entry = self.entry(for: kind) else { return false }
        entry.timeoutCap = cap
        replace(kind, with: entry)
        return true
    }
}

extension HandlerRegistry.Entry {
    /// An attempt's timeout: the job's own, lowered to the kind's cap when it has one (never raised).
    func timeoutMilliseconds(_ own: Int64) -> Int64 {
        guard let cap = timeoutCap else { return own }
        let milliseconds = max(1, cap.components.seconds * 1000 + cap.components.attoseconds / 1_000_000_000_000_000)
        return min(own, milliseconds)
    }
}
