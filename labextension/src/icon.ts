/** The sidebar icon: a flask, drawn in JupyterLab's icon colour so themes recolour it. */

import { LabIcon } from '@jupyterlab/ui-components';

const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" stroke="#616161" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round">
    <path fill="none" d="M8.5 3h7M10 3v6.5L4.8 18.6A1.6 1.6 0 0 0 6.2 21h11.6a1.6 1.6 0 0 0 1.4-2.4L14 9.5V3"/>
  </g>
  <g class="jp-icon3" fill="#616161">
    <path d="M7.3 14.5h9.4l2.1 3.9a1 1 0 0 1-.9 1.6H6.1a1 1 0 0 1-.9-1.6z"/>
  </g>
</svg>`;

export const experimentsIcon = new LabIcon({ name: 'nbexp:experiments', svgstr });
