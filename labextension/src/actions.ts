/**
 * What the panel's buttons do in the notebook: restore an experiment into its kernel, and
 * insert (and run) a cell comparing selected experiments. Both use nbexp's own magics and
 * API (nbexp/magic.py, nbexp/api.py), so the kernel does the work exactly as if typed.
 */

import { KernelMessage } from '@jupyterlab/services';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';

/** What a piece of code printed in the kernel, and whether it raised. */
export interface IKernelOutcome {
  ok: boolean;
  text: string;
}

const LOAD_EXT = '%load_ext nbexp';
const LOAD_EXT_LINE = /^\s*%(re)?load_ext\s+nbexp\s*$/m;
// Terminal colour codes in tracebacks and error names.
const ANSI = /\u001b\[[0-9;]*[A-Za-z]/g;

/** Run `code` in the notebook's kernel (not in a cell) and collect what it printed. */
export async function execute(panel: NotebookPanel, code: string): Promise<IKernelOutcome> {
  const kernel = panel.sessionContext.session?.kernel;
  if (!kernel) {
    return { ok: false, text: "This notebook has no running kernel: start it, then try again." };
  }
  const parts: string[] = [];
  let ok = true;
  const future = kernel.requestExecute({
    code,
    silent: false,
    store_history: false,
    allow_stdin: false,
    stop_on_error: true
  });
  future.onIOPub = (message: KernelMessage.IIOPubMessage) => {
    if (KernelMessage.isStreamMsg(message)) {
      parts.push(message.content.text);
    } else if (KernelMessage.isErrorMsg(message)) {
      ok = false;
      parts.push(`${message.content.ename}: ${message.content.evalue}\n`);
    } else if (
      KernelMessage.isExecuteResultMsg(message) ||
      KernelMessage.isDisplayDataMsg(message)
    ) {
      const plain = message.content.data['text/plain'];
      if (typeof plain === 'string') {
        parts.push(plain + '\n');
      }
    }
  };
  const reply = await future.done;
  if (reply.content.status !== 'ok') {
    ok = false;
  }
  return { ok, text: parts.join('').replace(ANSI, '').trim() };
}

/**
 * `%exp_restore ID` in the notebook's kernel, after making sure nbexp's magics are loaded
 * there (its own request, so "already loaded" never mixes into the report).
 */
export async function restoreIntoKernel(
  panel: NotebookPanel,
  id: string
): Promise<IKernelOutcome> {
  const loaded = await execute(panel, LOAD_EXT);
  if (!loaded.ok) {
    return loaded;
  }
  return execute(panel, `%exp_restore ${id}`);
}

/** An experiment chosen for comparison. */
export interface IChosen {
  id: string;
  short_id: string;
  name: string;
}

/**
 * The source of a cell comparing `chosen` (newest first as listed): `%exp_diff A B` for two
 * (the older first, so deltas read old → new), `nbexp.compare([...])` (the table of just
 * those, selected) for more. `%load_ext nbexp` is included unless the notebook has it.
 */
export function compareSource(chosen: IChosen[], notebookHasLoadExt: boolean): string {
  const lines: string[] = [];
  const names = chosen.map(item => item.name);
  if (chosen.length === 2) {
    const [newer, older] = chosen;
    if (!notebookHasLoadExt) {
      lines.push(LOAD_EXT);
    }
    lines.push(`# ${older.name} → ${newer.name}`);
    lines.push(`%exp_diff ${older.short_id} ${newer.short_id}`);
  } else {
    const refs = chosen.map(item => JSON.stringify(item.short_id)).join(', ');
    lines.push('import nbexp');
    lines.push(`# ${names.join(', ')}`);
    lines.push(`nbexp.compare([${refs}])`);
  }
  return lines.join('\n');
}

/** Whether any cell of the notebook loads nbexp's magics. */
export function hasLoadExt(panel: NotebookPanel): boolean {
  const cells = panel.content.model?.cells;
  if (!cells) {
    return false;
  }
  for (let index = 0; index < cells.length; index++) {
    if (LOAD_EXT_LINE.test(cells.get(index).sharedModel.getSource())) {
      return true;
    }
  }
  return false;
}

/**
 * Insert a cell comparing `chosen` below the active cell and run it. When the notebook
 * already loads nbexp in some cell, the kernel may still lack it (a restart since), so it
 * is loaded quietly first; otherwise the new cell loads it itself.
 */
export async function insertComparison(panel: NotebookPanel, chosen: IChosen[]): Promise<void> {
  const notebook = panel.content;
  const loads = hasLoadExt(panel);
  if (loads && chosen.length === 2) {
    await execute(panel, LOAD_EXT);
  }
  NotebookActions.insertBelow(notebook);
  const cell = notebook.activeCell;
  if (!cell) {
    return;
  }
  cell.model.sharedModel.setSource(compareSource(chosen, loads));
  notebook.mode = 'command';
  await NotebookActions.run(notebook, panel.sessionContext);
}
