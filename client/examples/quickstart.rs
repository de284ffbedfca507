//! The orchestrator guide's session in Rust: create a job, share context, decompose into a
//! parent task and its children plus independent tasks, wait with a progress line, collect
//! and synthesize. Run against `ORCA_COORDINATOR` (default `http://127.0.0.1:50051`) with
//! workers connected: `cargo run -p orca-client --example quickstart`.

use std::io::Write;
use std::time::Duration;

use orca_client::{Client, Subtask};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env().await?;
    println!("Breaking the request down into subtasks...");
    let job = client.create_job("Build task management API with CRUD").await?;
    client.set_shared_context(Some(&job), "stack", "Node.js 20, Express 4, Jest").await?;

    let server = client
        .add_subtask(
            &job,
            Subtask::new("Create Express.js server with basic setup").priority(10).expected_output("server.js"),
        )
        .await?;
    let routes = [
        ("Implement GET /tasks endpoint to list all tasks", "routes/list.js", 8),
        ("Implement POST /tasks endpoint to create task", "routes/create.js", 8),
        ("Implement PUT /tasks/:id endpoint to update task", "routes/update.js", 7),
        ("Implement DELETE /tasks/:id endpoint", "routes/delete.js", 7),
    ];
    let children: Vec<Subtask> = routes
        .iter()
        .map(|(prompt, out, prio)| Subtask::new(prompt).parent(server).priority(*prio).expected_output(out))
        .collect();
    let ids = client.add_subtasks(&job, children).await?;
    client
        .add_subtask(
            &job,
            Subtask::new("Write integration tests for all endpoints")
                .depends_on(&ids)
                .priority(5)
                .expected_output("tests/tasks.test.js"),
        )
        .await?;

    println!("Delegating to the worker pool (job {job})...");
    let mut last = String::new();
    let collected = client
        .wait_and_collect_with(&job, Some(Duration::from_secs(600)), |s| {
            let line = format!(
                "{:>5.1}%  {} of {} tasks done, {} running",
                s.progress_pct, s.completed, s.total_tasks, s.in_progress
            );
            if line == last {
                return;
            }
            last = line;
            eprint!("\r  {last} ");
            let _ = std::io::stderr().flush();
        })
        .await?;
    eprintln!();
    println!("\n{}", "=".repeat(70));
    println!("FINAL REPORT");
    println!("{}", "=".repeat(70));
    print!("{}", orca_client::synthesize_results(&collected));
    if collected.timed_out || collected.status.completed != collected.status.total_tasks {
        return Err(format!("job {job} did not complete: {:?}", collected.status).into());
    }
    Ok(())
}
