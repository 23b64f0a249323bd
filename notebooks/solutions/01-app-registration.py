# Solution of "Try it" in 01-app-registration: a third app role, added with a PATCH of the application.
admin_role = AppRole(id=uuid.uuid4(), value="Task.Admin", display_name="Administer tasks", is_enabled=True,
                     description="Call administrative tools.", allowed_member_types=["User"])
current = (await graph.applications.by_application_id(app.id).get()).app_roles
# the whole list goes back; on a re-run the role is already there (Entra refuses two roles with one value)
new_roles = current if "Task.Admin" in {r.value for r in current} else current + [admin_role]
await graph.applications.by_application_id(app.id).patch(Application(app_roles=new_roles))
await until_replicated(lambda: graph.applications.by_application_id(app.id).get(), what="the Task.Admin role",
                       ready=lambda fresh: "Task.Admin" in {r.value for r in fresh.app_roles})
print("app roles:", ", ".join(r.value for r in new_roles))
