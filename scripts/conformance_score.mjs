// Counts a results file of http-tests/cache-tests as cache-tests.fyi does (the rules of the
// suite's lib/results.mjs): a test passes when its result is a pass and every test it depends on
// passed (or answered "yes"); "required failed" are the required tests that ran, had their
// dependencies, and failed. Prints the totals, then each required failure.
//
//   node scripts/conformance_score.mjs SUITE_DIR RESULTS.json
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, file] = process.argv.slice(2)
const index = path.join(suiteDir, 'tests', 'index.mjs')
const suites = (await import(pathToFileURL(index).href)).default
const results = JSON.parse(fs.readFileSync(file, 'utf8'))
const tests = new Map(suites.flatMap(suite => suite.tests.map(test => [test.id, test])))

function outcome (id, dependencies = true) {
  const test = tests.get(id)
  const result = results[id]
  if (result === undefined) return 'untested'
  if (dependencies) {
    for (const dependency of test.depends_on || []) {
      if (!['pass', 'yes'].includes(outcome(dependency))) return 'dependency_fail'
    }
  }
  if (result[0] === 'Setup') return result[1] === 'retry' ? 'retry' : 'setup_fail'
  if (result === false || result[0] === 'AbortError') return 'harness_fail'
  const passed = result === true
  if (test.kind === 'optimal') return passed ? 'pass' : 'optional_fail'
  if (test.kind === 'check') return passed ? 'yes' : 'no'
  return passed ? 'pass' : 'fail'
}

const counts = {}
const failed = []
for (const id of tests.keys()) {
  const name = outcome(id)
  counts[name] = (counts[name] || 0) + 1
  if (name === 'fail') failed.push(`  ${id}: ${JSON.stringify(results[id])}`)
}
const n = name => counts[name] || 0
console.log(`passed ${n('pass')}, required failed ${n('fail')} (optional failed ` +
  `${n('optional_fail')}, dependency failed ${n('dependency_fail')}, setup failed ` +
  `${n('setup_fail')}, harness failed ${n('harness_fail')}, untested ${n('untested')})`)
for (const line of failed) console.log(line)
