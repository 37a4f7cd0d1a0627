/**
 * nbexp's JupyterLab extension: the "Experiments" panel in the left sidebar, following the
 * current notebook (INotebookTracker.currentChanged).
 */

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';

import { ExperimentsPanel } from './panel';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbexp:panel',
  description: "The Experiments sidebar: the current notebook's recorded experiments.",
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    restorer: ILayoutRestorer | null
  ) => {
    const panel = new ExperimentsPanel();
    app.shell.add(panel, 'left', { rank: 650 });
    if (restorer) {
      restorer.add(panel, panel.id);
    }
    panel.notebook = tracker.currentWidget;
    tracker.currentChanged.connect((_, notebook) => {
      panel.notebook = notebook;
    });
  }
};

export default plugin;
