/// The scripts of the pipeline engine's run record (docs/PIPELINES.md, "Engine design"): each runs atomically on the
/// run's own hash slot (`KEYS[1]` = the run prefix `ns:{run:<r>}:`, `ARGV[1]` = the run id), sent as `prelude.lua`,
/// `runs.lua` (the readiness rule and its bookkeeping), then the script's own file.
public enum RunScripts {
    /// The helpers every run script shares (`runs.lua`).
    public static let helpers = EmbeddedLuaScripts.runs

    /// RUN CREATE: ARGV = run id, pipeline, graph JSON, queues JSON, for_each JSON, definition text, file, params
    /// JSON, run.date, run.time, retention ms. Returns {'duplicate', state} for a run id that exists, else
    /// {'created', claims, skipped, stopped_by, outcome}.
    public static let create = script("runCreate", EmbeddedLuaScripts.runCreate)

    /// RUN ADVANCE: ARGV = run id, ended job id, step, item, end state, result JSON, reason. Records the end, applies
    /// the readiness rule; returns {claims, skipped, stopped_by, outcome} (the stored claims for a repeated notice),
    /// or {'gone'} when the run no longer exists. An empty job id only applies the rule.
    public static let advance = script("runAdvance", EmbeddedLuaScripts.runAdvance)

    /// RUN ITEMS: ARGV = run id, step, count. Records the item count of a for_each step once; 0 ends it `passed`.
    public static let items = script("runItems", EmbeddedLuaScripts.runItems)

    /// RUN CANCEL: ARGV = run id. Skips every waiting step; returns {'cancelling', running steps} (step, job id,
    /// queue, items), {'unknown'} or {'final', state}.
    public static let cancel = script("runCancel", EmbeddedLuaScripts.runCancel)

    /// Every run script.
    public static let all: [(name: String, source: String)] = [create, advance, items, cancel]

    static func script(_ name: String, _ body: String) -> (name: String, source: String) {
        (name, QueueScripts.prelude + helpers + body)
    }
}
