import JobProtocol

/// What a job belongs to: a step (and item) of a pipeline run, or a batch. `enqueue` writes these as fields of the
/// job's hash (`run`, `step`, `item`, `batch`), and every script that ends the job reads them there to leave the run
/// its notice (docs/PIPELINES.md, "Engine design").
public struct JobLinks: Sendable, Equatable {
    /// The run id.
    public var run: String?
    /// The step id within the run.
    public var step: String?
    /// The item index of a `for_each` step's job.
    public var item: Int?
    /// The batch id.
    public var batch: String?

    public init(run: String? = nil, step: String? = nil, item: Int? = nil, batch: String? = nil) {
        self.run = run
        self.step = step
        self.item = item
        self.batch = batch
    }

    /// The links as the JSON object `enqueue` reads (fields that are nil are left out).
    var jsonText: String {
        var fields: [String: JSONValue] = [:]
        if let run { fields["run"] = .string(run) }
        if let step { fields["step"] = .string(step) }
        if let item { fields["item"] = .string(String(item)) }
        if let batch { fields["batch"] = .string(batch) }
        return JSONValue.object(fields).jsonText
    }
}
