"""The background worker (`guanhao worker`, or embedded in `guanhao serve`): every scheduled duty, coordinated
through the database so that any number of workers never do the same item twice."""
