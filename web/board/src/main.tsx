import { render } from "preact";
import "./style.css";

render(<p>pm-server board</p>, document.getElementById("app")!);
